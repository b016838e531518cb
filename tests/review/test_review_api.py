"""The HTTP API as its callers see it: who may do what, errors as JSON, intake, feed, health, metrics."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlmodel import Session, func, select

from hub.models import AuditEntry, QuarantinedRecord, Violation
from review_seed import TODAY, make_hub, violation
from tests.helpers import grant


# --- who may do what ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("who", "method", "path", "status"),
    [
        (None, "GET", "/api/v1/companies?q=x", 401),
        (None, "GET", "/api/v1/feeds/licences", 401),
        (None, "POST", "/api/v1/violations", 401),
        (None, "POST", "/api/v1/licences", 401),
        (None, "GET", "/api/v1/agencies", 401),
        ("bogus", "GET", "/api/v1/companies?q=x", 401),
        ("scjg", "GET", "/api/v1/companies/{uscc}/history", 403),  # a regulator cannot read histories
        ("scjg", "GET", "/api/v1/companies/{uscc}/check?case=C1", 403),
        ("scjg", "GET", "/api/v1/feeds/licences?agency=GSJ", 403),  # regulator A asking for B's feed
        ("scjg", "POST", "/api/v1/licences", 403),
        ("reviewer", "POST", "/api/v1/violations", 403),  # a reviewer cannot submit violations
        ("reviewer", "GET", "/api/v1/feeds/licences?agency=SCJG", 403),
        ("reviewer", "POST", "/api/v1/licences", 403),
        ("reviewer", "GET", "/api/v1/companies/{uscc}/history?include_hidden=true", 403),  # auditors only
        ("intake", "GET", "/api/v1/companies?q=x", 403),
        ("reviewer", "GET", "/api/v1/companies/{uscc}/history", 200),
        ("auditor", "GET", "/api/v1/companies/{uscc}/history?include_hidden=true", 200),
        ("scjg", "GET", "/api/v1/feeds/licences", 200),
        ("scjg", "GET", "/api/v1/feeds/licences?agency=SCJG", 200),
        ("admin", "GET", "/api/v1/feeds/licences?agency=GSJ", 200),
        ("reviewer", "GET", "/api/v1/agencies", 200),
    ],
)  # fmt: skip
def test_auth_matrix(hub, client, who, method, path, status):
    uscc = hub.grant(1)
    headers = {"Authorization": "Bearer not-a-token"} if who == "bogus" else (hub.headers(who) if who else {})
    body = {"records": [violation(uscc, "SCJG", "X1")]} if "violations" in path else ([grant(2)] if "licences" in path and method == "POST" else None)
    response = client.request(method, path.format(uscc=uscc), headers=headers, json=body)
    assert response.status_code == status, response.text
    if status >= 400:
        error = response.json()["error"]
        assert error["code"] in {"unauthenticated", "invalid_token", "forbidden"} and error["message"]


def test_without_a_token_file_everyone_is_refused(tmp_path):
    hub = make_hub(tmp_path)
    hub.runtime.settings.api_tokens_file.unlink()
    with hub.client() as c:
        assert c.get("/api/v1/companies?q=x", headers=hub.headers("admin")).status_code == 401


def test_lookups_are_audited_with_who_which_company_and_case(hub, client):
    uscc = hub.grant(1)
    client.get(f"/api/v1/companies/{uscc}/history", params={"case": "SP-7"}, headers=hub.headers("reviewer"))
    with Session(hub.engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "review.history")).one()
    assert (entry.actor, entry.subject, entry.detail["case"]) == ("reviewer:reviewer", f"company:{uscc}", "SP-7")


def test_a_request_line_names_the_caller_and_cannot_be_forged_through_the_path(hub, client, caplog):
    """The line per request (hub.api.access) names the caller, never the token; a newline in a path stays escaped."""
    caplog.set_level("INFO", logger="hub.api.access")
    uscc = hub.grant(1)
    assert client.get(f"/api/v1/companies/{uscc}/history", params={"case": "LOG-1"},
                      headers=hub.headers("reviewer")).status_code == 200  # fmt: skip
    forged = "/api/v1/companies/X%0A127.0.0.1:1%20%22GET%20/%20HTTP/1.1%22%20200/history"
    assert client.get(forged, headers=hub.headers("reviewer")).status_code == 404
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.api.access"]
    assert any(f"/api/v1/companies/{uscc}/history?case=LOG-1 HTTP/1.1\" 200 " in line and line.endswith(" reviewer:reviewer")
               for line in lines), lines  # fmt: skip
    assert all("\n" not in line for line in lines)
    assert any("X%0A127.0.0.1:1" in line for line in lines), lines
    assert not any(hub.tokens["reviewer"] in line for line in lines)


def test_tokens_are_stored_hashed_only(hub):
    text = hub.runtime.settings.api_tokens_file.read_text()
    assert all(token not in text for token in hub.tokens.values())


# --- reviewer reads -------------------------------------------------------------------------
def test_search_by_partial_chinese_name_and_by_legacy_org_code(hub, client):
    uscc = hub.grant(7)
    by_name = client.get("/api/v1/companies", params={"q": "测试7号"}, headers=hub.headers("reviewer")).json()
    by_org = client.get("/api/v1/companies", params={"q": uscc[8:17]}, headers=hub.headers("reviewer")).json()
    assert [c["uscc"] for c in by_name] == [uscc] == [c["uscc"] for c in by_org]


def test_history_filters_and_check_over_http(hub, client):
    uscc = hub.grant(1)
    hub.pulled()
    hub.violation(uscc, "SCJG", "A1", severity="ordinary")
    hub.violation(uscc, "GSJ", "B1", severity="serious", decided=TODAY - dt.timedelta(days=400))
    h = hub.headers("reviewer")
    full = client.get(f"/api/v1/companies/{uscc}/history", headers=h).json()
    assert {v["agency"] for v in full["violations"]} == {"SCJG", "GSJ"}
    assert full["licences"][0]["deliveries"][0]["state"] == "pending"
    only_gsj = client.get(f"/api/v1/companies/{uscc}/history", params={"agency": "GSJ"}, headers=h).json()
    assert [v["agency_record_id"] for v in only_gsj["violations"]] == ["B1"]
    serious = client.get(f"/api/v1/companies/{uscc}/history", params={"severity": "serious"}, headers=h).json()
    assert [v["agency_record_id"] for v in serious["violations"]] == ["B1"]
    recent = client.get(f"/api/v1/companies/{uscc}/history", params={"since": (TODAY - dt.timedelta(days=90)).isoformat()},
                        headers=h).json()  # fmt: skip
    assert [v["agency_record_id"] for v in recent["violations"]] == ["A1"]
    check = client.get(f"/api/v1/companies/{uscc}/check", params={"case": "SP-1"}, headers=h).json()
    assert check["verdict"] == "RED" and check["case_id"] == "SP-1"


@pytest.mark.parametrize("case", [None, "   "])
def test_check_needs_a_case_id(hub, client, case):
    uscc = hub.grant(1)
    params = {} if case is None else {"case": case}
    response = client.get(f"/api/v1/companies/{uscc}/check", params=params, headers=hub.headers("reviewer"))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_unknown_company_is_a_json_404(hub, client):
    response = client.get("/api/v1/companies/914403001922038216/history", headers=hub.headers("reviewer"))
    assert response.status_code == 404 and response.json()["error"]["code"] == "company_not_found"


# --- licences from the approval system ------------------------------------------------------
def test_post_one_licence_and_a_batch(hub, client):
    h = hub.headers("intake")
    assert client.post("/api/v1/licences", json=grant(1), headers=h).json()["created"] == 1
    result = client.post("/api/v1/licences", json=[grant(1), grant(2), grant(3)], headers=h).json()
    assert (result["created"], result["unchanged"]) == (2, 1)


def test_a_batch_with_bad_records_is_refused_whole_with_every_problem(hub, client):
    bad = [grant(1), grant(2, XK_XDR_SHXYM="914403001922038217"), grant(3, XK_JDRQ="2026-02-30")]
    response = client.post("/api/v1/licences", json=bad, headers=hub.headers("intake"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "contract_violation"
    assert {(p["record"], p["field"]) for p in error["problems"]} == {("2", "XK_XDR_SHXYM"), ("3", "XK_JDRQ")}
    assert client.get("/api/v1/companies", params={"q": "测试1号"}, headers=hub.headers("reviewer")).json() == []


# --- violations from regulators -------------------------------------------------------------
def _violations(hub) -> list[Violation]:
    with Session(hub.engine) as s:
        return list(s.exec(select(Violation).order_by(Violation.id)).all())


def test_post_violations_is_idempotent_and_forced_to_the_callers_agency(hub, client, uscc):
    records = [violation(uscc, "GSJ", "R-1"), violation(uscc, "SCJG", "R-2")]  # claims to be GSJ: ignored
    first = client.post("/api/v1/violations", json={"records": records}, headers=hub.headers("scjg")).json()
    again = client.post("/api/v1/violations", json={"records": records}, headers=hub.headers("scjg")).json()
    assert (first["created"], again["unchanged"], again["created"]) == (2, 2, 0)
    assert [(v.source_agency, v.agency_record_id) for v in _violations(hub)] == [("SCJG", "R-1"), ("SCJG", "R-2")]
    changed = [violation(uscc, "SCJG", "R-1", repair_status="repaired", repair_date=TODAY.isoformat())]
    assert client.post("/api/v1/violations", json={"records": changed}, headers=hub.headers("scjg")).json()["updated"] == 1
    assert len(_violations(hub)) == 2


def test_invalid_violations_are_quarantined_and_the_batch_goes_on(hub, client, uscc):
    bad = violation(uscc, "SCJG", "BAD-1", CF_XDR_SHXYM="914403001922038217", CF_CFLB=["打板子"])
    response = client.post("/api/v1/violations", json={"records": [bad, violation(uscc, "SCJG", "OK-1")]},
                           headers=hub.headers("scjg"))  # fmt: skip
    body = response.json()
    assert response.status_code == 200 and (body["created"], body["quarantined"]) == (1, 1)
    assert {p["field"] for p in body["records"][0]["problems"]} >= {"CF_XDR_SHXYM", "CF_CFLB[0]"}
    with Session(hub.engine) as s:
        (q,) = s.exec(select(QuarantinedRecord)).all()
    assert (q.source, q.agency_code, q.record_ref) == ("api", "SCJG", "BAD-1") and "打板子" in q.raw


def test_violations_in_the_agencys_native_dialect_use_its_mapping(hub, client, uscc):
    native = {"penaltyId": "N-1", "entName": "天津测试公司", "subjectType": "LEGAL", "uniscid": uscc,
              "penDecNo": "津南市监罚〔2026〕1号", "illegActType": "无证经营", "illegFact": "检查发现",
              "penBasis": "《食品安全法》", "penType": "罚款", "penContent": "罚款2000元", "penAm": 2000,
              "penDecIssDate": TODAY.isoformat(), "penValidTo": (TODAY + dt.timedelta(days=365)).isoformat()}  # fmt: skip
    body = client.post("/api/v1/violations", json={"format": "native", "records": [native]},
                       headers=hub.headers("scjg")).json()  # fmt: skip
    assert body["created"] == 1
    assert str(_violations(hub)[0].fine) == "0.2"  # 2000 yuan = 0.2 万元


# --- the licence feed -------------------------------------------------------------------------
def test_feed_is_ordered_resumable_and_carries_a_revocation(hub, client):
    for n in range(1, 6):
        hub.grant(n)
    hub.grant(2, lifecycle="revoked", lifecycle_date=TODAY.isoformat(), lifecycle_reason="以欺骗手段取得")
    h, seen, after = hub.headers("scjg"), [], "0"
    while True:
        page = client.get("/api/v1/feeds/licences", params={"after": after, "limit": 2}, headers=h).json()
        seen += page["items"]
        after = page["next_cursor"]
        if not page["has_more"]:
            break
    assert [int(i["cursor"]) for i in seen] == sorted(int(i["cursor"]) for i in seen)
    assert [(i["decision_no"][-8:], i["lifecycle"]) for i in seen][-1] == (grant(2)["XK_WSH"][-8:], "revoked")
    assert len(seen) == 6 and len({i["message_id"] for i in seen}) == 6
    hub.grant(6)  # later grants continue from the saved cursor, nothing repeated
    page = client.get("/api/v1/feeds/licences", params={"after": after}, headers=h).json()
    assert [i["decision_no"] for i in page["items"]] == [grant(6)["XK_WSH"]]


@pytest.mark.parametrize("after", ["1 OR 1=1", "99999999999999999999", "１２"])
def test_feed_refuses_a_cursor_it_never_gave(hub, client, after):
    response = client.get("/api/v1/feeds/licences", params={"after": after}, headers=hub.headers("scjg"))
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_cursor"


# --- hostile input ------------------------------------------------------------------------------
def test_an_oversized_body_is_refused_with_413_and_nothing_written(hub, client, uscc):
    huge = {"records": [violation(uscc, "SCJG", f"R{i}", CF_SY="事" * 4000) for i in range(800)]}
    response = client.post("/api/v1/violations", content=json.dumps(huge), headers={**hub.headers("scjg"),
                           "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"
    assert _violations(hub) == []


def test_an_oversized_chunked_body_is_refused_too(hub, client):
    def chunks():
        for _ in range(20):
            yield b"x" * (1024 * 1024)

    response = client.post("/api/v1/licences", content=chunks(), headers=hub.headers("intake"))
    assert response.status_code == 413


SQLISH = ["'; DROP TABLE violations; --", "1' OR '1'='1", "天津\"); DELETE FROM companies; --"]


@pytest.mark.parametrize("text", SQLISH)
def test_sql_looking_strings_are_stored_verbatim_and_harmless(hub, client, uscc, text):
    record = violation(uscc, "SCJG", text, name=text, CF_SY=text, CF_WFXW=text, CF_YJ=text, CF_NR=text,
                       CF_WSH=text)  # fmt: skip
    assert client.post("/api/v1/violations", json={"records": [record]}, headers=hub.headers("scjg")).json()["created"] == 1
    (stored,) = _violations(hub)
    assert (stored.agency_record_id, stored.subject_name, stored.decision_no) == (text, text, text)
    hits = client.get("/api/v1/companies", params={"q": text}, headers=hub.headers("reviewer"))
    assert hits.status_code == 200
    with Session(hub.engine) as s:
        assert s.exec(select(func.count()).select_from(Violation)).one() == 1


def test_a_body_that_is_not_json_is_a_json_error(hub, client):
    response = client.post("/api/v1/licences", content=b"\xff\xfe not json", headers={**hub.headers("intake"),
                           "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


# --- operations ---------------------------------------------------------------------------------
def test_readyz_is_false_before_migrations_and_true_after(tmp_path):
    hub = make_hub(tmp_path, migrated=False)
    with hub.client() as c:
        before = c.get("/readyz")
        assert before.status_code == 503 and before.json()["checks"]["migrations"] is False
        assert before.json()["error"]["code"] == "not_ready"
        assert c.get("/healthz").status_code == 200
        hub.runtime.init_database()
        assert c.get("/readyz").json() == {"ready": True, "checks": {"database": True, "migrations": True}}


def test_metrics_expose_deliveries_quarantine_pulls_and_latency(hub, client, uscc):
    hub.grant(1)
    hub.pulled()
    client.post("/api/v1/violations", json={"records": [violation(uscc, "SCJG", "Q", CF_CFLB=["?"])]},
                headers=hub.headers("scjg"))  # fmt: skip
    text = client.get("/metrics").text
    assert 'hub_deliveries{agency="SCJG",state="pending"} 1.0' in text
    assert 'hub_quarantined_records{agency="SCJG",source="api"} 1.0' in text
    assert 'hub_agency_last_pull_timestamp_seconds{agency="GSJ"}' in text
    assert 'hub_http_request_duration_seconds_count{method="POST",route="/api/v1/violations",status="200"} 1.0' in text


def test_openapi_is_published(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/companies", "/api/v1/companies/{key}/history", "/api/v1/companies/{key}/check",
            "/api/v1/licences", "/api/v1/violations", "/api/v1/feeds/licences", "/api/v1/agencies"} <= set(paths)  # fmt: skip
    assert client.get("/docs").status_code == 200


@pytest.mark.postgres
def test_check_history_feed_and_intake_on_postgresql(pg_hub, uscc):
    hub = pg_hub
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.grant(1, XK_XDR_SHXYM=uscc, lifecycle="revoked", lifecycle_date=TODAY.isoformat(), lifecycle_reason="撤销")
    hub.pulled(never=("GHFJ",))
    with hub.client() as c:
        posted = c.post("/api/v1/violations", json={"records": [violation(uscc, "SCJG", "PG-1")] * 2},
                        headers=hub.headers("scjg")).json()  # fmt: skip
        assert (posted["created"], posted["unchanged"]) == (1, 1)
        check = c.get(f"/api/v1/companies/{uscc}/check", params={"case": "PG"}, headers=hub.headers("reviewer")).json()
        assert check["verdict"] == "RED" and check["stale_agencies"] == ["GHFJ"]
        feed = c.get("/api/v1/feeds/licences", headers=hub.headers("scjg")).json()
        assert [i["lifecycle"] for i in feed["items"]] == ["granted", "revoked"]
        assert c.get("/readyz").json()["ready"] is True


def test_history_shows_records_by_the_publication_periods_the_verdict_judges_by(hub):
    """verdict_rules.toml's [publication] table, not the built-in Order 36 periods: edited, both follow it."""
    from fastapi.testclient import TestClient

    from hub.api import create_app
    from hub.compliance import load_rules

    uscc = hub.grant(1)
    hub.pulled()
    hub.violation(uscc, "SCJG", "M-1", severity="minor", decided=TODAY - dt.timedelta(days=100))
    defaults = load_rules()
    six_months = defaults.model_copy(update={"publication": {**defaults.publication, "minor": 6}})
    for rules, shown in ((defaults, []), (six_months, ["M-1"])):
        with TestClient(create_app(hub.runtime, rules=rules), raise_server_exceptions=False) as client:
            page = client.get(f"/api/v1/companies/{uscc}/history", headers=hub.headers("reviewer")).json()
        assert [v["agency_record_id"] for v in page["violations"]] == shown
