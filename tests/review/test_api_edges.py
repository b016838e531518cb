"""The API at its edges: odd record ids, text that is not text, control characters in parameters,
bodies not sent as JSON, tokens for agencies that are not configured, companies with no identifier,
and what a 503 tells the caller. Each answer is per record or a clear 4xx, never a 500.
"""

from __future__ import annotations

import json
import os

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from hub.api.auth import Role, add_token
from hub.api.errors import install_error_handlers
from hub.errors import TransientError
from hub.models import AuditEntry, QuarantinedRecord, Violation
from review_seed import make_hub, violation
from tests.helpers import grant, run_hub


@pytest.fixture(params=["sqlite", "postgres"])
def any_hub(request, tmp_path):
    """The reviewer hub on SQLite and on PostgreSQL (NUL and surrogates fail differently on each)."""
    h = make_hub(tmp_path, database_url=None if request.param == "sqlite" else request.getfixturevalue("pg_url"))
    yield h
    h.runtime.dispose()


def _post_violations(hub, client, records: list, **extra):
    # ensure_ascii: a lone surrogate travels as the JSON escape "\ud800", as a real client would send it
    body = json.dumps({"records": records, **extra}, ensure_ascii=True)
    return client.post("/api/v1/violations", content=body,
                       headers={**hub.headers("scjg"), "content-type": "application/json"})  # fmt: skip


def _quarantined(hub) -> list[QuarantinedRecord]:
    with Session(hub.engine) as s:
        return list(s.exec(select(QuarantinedRecord).order_by(QuarantinedRecord.id)))


# --- item 1: a falsy record id that is not a string ---------------------------------------------
@pytest.mark.parametrize("claimed", [0, False, [], {}])
def test_a_refused_record_with_a_falsy_non_string_id_is_quarantined_by_that_id(hub, client, uscc, claimed):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    bad = violation(uscc, "SCJG", "ignored") | {"agency_record_id": claimed}
    response = _post_violations(hub, client, [bad, violation(uscc, "SCJG", "OK-1")])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["quarantined"], body["created"]) == (1, 1)
    refused = body["records"][0]
    assert (refused["agency_record_id"], refused["outcome"]) == (str(claimed), "quarantined")
    assert [p["field"] for p in refused["problems"]] == ["agency_record_id"]
    assert [q.record_ref for q in _quarantined(hub)] == [str(claimed)]


# --- item 2: a lone UTF-16 surrogate, on both databases -------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("BZ", "remark \ud800", "BZ"),
        ("CF_XDR_MC", "\udfff公司", "CF_XDR_MC"),
        ("CF_CFLB", ["罚款", "\ud800"], "CF_CFLB[1]"),
        ("agency_record_id", "R-\ud800", "agency_record_id"),
        ("NOT_A_FIELD", "\ud800", "NOT_A_FIELD"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_is_refused_per_record_naming_the_field(any_hub, uscc, field, value, named):
    hub = any_hub
    hub.grant(1, XK_XDR_SHXYM=uscc)
    bad = violation(uscc, "SCJG", "R-1") | {field: value}
    with hub.client() as client:
        response = _post_violations(hub, client, [bad, violation(uscc, "SCJG", "OK-1")])
    assert response.status_code == 200, response.text
    refused, stored = response.json()["records"]
    assert refused["outcome"] == "quarantined" and stored["outcome"] == "created"
    reasons = {p["field"]: p["reason"] for p in refused["problems"]}
    assert "unpaired UTF-16 surrogate" in reasons[named]
    [kept] = _quarantined(hub)
    assert json.loads(kept.raw) == bad  # the record as sent, losslessly
    with Session(hub.engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "api.violations")).one()
        assert entry.payload_digest and entry.detail["quarantined"] == 1


def test_a_lone_surrogate_in_an_unmapped_native_field_is_refused_too(hub, client, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    response = _post_violations(hub, client, [{"penaltyId": "N-1", "someLocalField": "\ud800"}], format="native")
    assert response.status_code == 200, response.text
    [refused] = response.json()["records"]
    assert refused["outcome"] == "quarantined"
    assert "unpaired UTF-16 surrogate" in {p["field"]: p["reason"] for p in refused["problems"]}["someLocalField"]


def test_a_native_id_sent_as_7_0_names_the_same_record_refused_and_corrected(hub, client, uscc):
    """The mapping stores a JSON 7.0 as record "7": the refusal must name it so, or its correction never meets it."""
    hub.grant(1, XK_XDR_SHXYM=uscc)
    native = {"penaltyId": 7.0, "entName": "天津测试公司", "subjectType": "LEGAL", "uniscid": uscc,
              "penDecNo": "津南市监罚〔2026〕1号", "illegActType": "无证经营", "illegFact": "现场检查",
              "penBasis": "《食品安全法》", "penType": "罚款", "penContent": "罚款", "penDecIssDate": "2026-01-05",
              "penValidTo": "2029-01-05"}  # fmt: skip
    refused = _post_violations(hub, client, [{**native, "penAm": "0,5"}], format="native").json()["records"]
    stored = _post_violations(hub, client, [{**native, "penAm": "5000"}], format="native").json()["records"]
    assert [(r["agency_record_id"], r["outcome"]) for r in refused + stored] == [("7", "quarantined"), ("7", "created")]


# --- item 3: control characters in query and path parameters ------------------------------------
@pytest.mark.parametrize(
    ("who", "path", "parameter"),
    [
        ("reviewer", "/api/v1/companies?q=a%00b", "query.q"),
        ("reviewer", "/api/v1/companies/a%00b/history", "path.key"),
        ("reviewer", "/api/v1/companies/{uscc}/history?agency=SC%00", "query.agency"),
        ("reviewer", "/api/v1/companies/{uscc}/history?case=C%00", "query.case"),
        ("reviewer", "/api/v1/companies/{uscc}/check?case=C%00", "query.case"),
        ("reviewer", "/api/v1/companies/{uscc}/check?case=C-1&item=N%00", "query.item"),
        ("admin", "/api/v1/feeds/licences?agency=SC%00JG", "query.agency"),
    ],
)  # fmt: skip
def test_a_control_character_in_a_parameter_is_a_422_naming_it(any_hub, who, path, parameter):
    uscc = any_hub.grant(1)
    with any_hub.client() as client:
        response = client.get(path.format(uscc=uscc), headers=any_hub.headers(who))
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["problems"]
    assert problem["field"] == parameter and "control character U+0000" in problem["reason"]


@pytest.mark.parametrize("path", ["/?q=a%00b", "/companies/a%00b", "/companies/{uscc}?case=C%00"])
def test_a_control_character_in_a_page_parameter_is_an_error_page(any_hub, path):
    uscc = any_hub.grant(1)
    with any_hub.client() as client:
        client.cookies.set("hub_token", any_hub.tokens["reviewer"])
        response = client.get(path.format(uscc=uscc))
    assert response.status_code == 422 and response.headers["content-type"].startswith("text/html")
    assert "control character U+0000" in response.text


# --- item 4: what a 503 asks the caller to do ----------------------------------------------------
@pytest.mark.parametrize(
    ("error", "retry_after", "message"),
    [
        (TransientError("another import is recording licences; try again in a minute", retry_after=60), "60",
         "another import is recording licences; try again in a minute"),
        (TransientError("the agency is slow", retry_after=2.5), "3", "the agency is slow; try again in 3 s"),
        (TransientError("the database is busy"), "5", "the database is busy; try again shortly"),
    ],
)  # fmt: skip
def test_a_transient_error_is_a_503_with_its_own_retry_after(error, retry_after, message):
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/busy")
    def busy() -> None:
        raise error

    response = TestClient(app).get("/busy")
    assert (response.status_code, response.headers["retry-after"]) == (503, retry_after)
    assert response.json()["error"] == {"code": "try_again", "message": message}


# --- item 6: a token for an agency the registry does not have -----------------------------------
def test_a_token_for_an_unconfigured_agency_is_refused_and_an_unknown_feed_is_a_404(hub, client, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    typo = {"Authorization": "Bearer " + add_token(hub.runtime.settings.api_tokens_file, name="typo",
                                                      role=Role.REGULATOR, agency="SJCG")}  # fmt: skip
    for response in (client.post("/api/v1/violations", json={"records": [violation(uscc, "SCJG", "X")]}, headers=typo),
                     client.get("/api/v1/feeds/licences", headers=typo)):  # fmt: skip
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error == {"code": "unknown_agency", "message": "this token's agency SJCG is not configured on this hub"}
    unknown = client.get("/api/v1/feeds/licences", params={"agency": "NOPE"}, headers=hub.headers("admin"))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_agency"
    assert "NOPE" in unknown.json()["error"]["message"] and "SCJG" in unknown.json()["error"]["message"]
    with Session(hub.engine) as s:
        assert s.exec(select(Violation)).all() == []


def test_hub_tokens_add_refuses_an_unknown_agency_naming_the_known_ones(hub, tmp_path):
    env = {**os.environ, "HUB_DATA_DIR": str(tmp_path)}
    out = run_hub("tokens", "add", "typo", "--role", "regulator", "--agency", "sjcg",
                  "--file", str(tmp_path / "t.json"), env=env)  # fmt: skip
    assert out.returncode == 1 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert "'SJCG'" in line and "SCJG" in line and "XFZD" in line
    assert not (tmp_path / "t.json").exists()


# --- item 9: a body not sent as JSON ------------------------------------------------------------
@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize(("path", "who"), [("/api/v1/licences", "intake"), ("/api/v1/violations", "scjg")])
def test_a_body_not_sent_as_json_is_a_415(hub, client, uscc, path, who, content_type):
    body = json.dumps(grant(3) if who == "intake" else {"records": [violation(uscc, "SCJG", "V-1")]})
    headers = {**hub.headers(who), **({"content-type": content_type} if content_type else {})}
    response = client.post(path, content=body.encode(), headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert "application/json" in response.json()["error"]["message"]


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "application/vnd.hub.licence+json"])
def test_json_with_a_charset_or_a_json_suffix_is_accepted(hub, client, content_type):
    response = client.post("/api/v1/licences", content=json.dumps(grant(3)).encode(),
                           headers={**hub.headers("intake"), "content-type": content_type})  # fmt: skip
    assert response.status_code == 200, response.text


# --- item 10: a company without any identifier ----------------------------------------------------
def test_a_company_without_an_identifier_is_reachable_by_the_key_its_search_gives(hub, client):
    person = grant(9, XK_XDR_SHXYM=None, XK_XDR_LB="自然人", XK_XDR_MC="李四")
    assert client.post("/api/v1/licences", json=person, headers=hub.headers("intake")).status_code == 200
    [hit] = client.get("/api/v1/companies", params={"q": "李四"}, headers=hub.headers("reviewer")).json()
    assert hit["uscc"] is None and hit["key"].startswith("id:")
    history = client.get(f"/api/v1/companies/{hit['key']}/history", headers=hub.headers("reviewer"))
    assert history.status_code == 200 and history.json()["name"] == "李四"
    check = client.get(f"/api/v1/companies/{hit['key']}/check", params={"case": "C-1"}, headers=hub.headers("reviewer"))
    assert check.status_code == 200, check.text
    for wrong in ("id:999999", "id:x", "id:-1", "id:" + "9" * 30):
        assert client.get(f"/api/v1/companies/{wrong}/history", headers=hub.headers("reviewer")).status_code == 404
