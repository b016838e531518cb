"""GET /api/v1/quarantine[/{id}]: admins only; filters and pages as `hub quarantine list`. Submitted records
refused twice are one row, retried they stay open with new reasons, and a corrected submission releases them."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from hub.db import session_scope
from hub.intake import RawRecord, import_licences
from hub.models import AuditEntry, QuarantinedRecord
from hub.quarantine import retry
from review_seed import violation
from tests.helpers import grant

BAD_USCC = "914403001922038217"


@pytest.fixture(params=["hub", "pg_hub"])
def any_hub(request):
    """The reviewer test hub on SQLite and on PostgreSQL."""
    return request.getfixturevalue(request.param)


def _seed(hub, uscc: str) -> None:
    """Three refused submissions from SCJG and one refused licence from the approval system."""
    with hub.client() as c:
        bad = [violation(uscc, "SCJG", f"BAD-{n}", CF_CFLB=["打板子"]) for n in range(3)]
        assert c.post("/api/v1/violations", json={"records": bad}, headers=hub.headers("scjg")).json()["quarantined"] == 3
    record = grant(1, XK_XDR_SHXYM=BAD_USCC)
    with session_scope(hub.engine) as session:
        import_licences(session, [RawRecord(1, record, json.dumps(record, ensure_ascii=False), "g.jsonl")],
                        hub.runtime.registry, actor="test", skip_invalid=True)  # fmt: skip


@pytest.mark.parametrize("path", ["/api/v1/quarantine", "/api/v1/quarantine/1"])
@pytest.mark.parametrize(("who", "status"), [(None, 401), ("reviewer", 403), ("auditor", 403), ("scjg", 403),
                                             ("intake", 403), ("admin", 200)])  # fmt: skip
def test_only_admins_read_the_quarantine(hub, client, uscc, path, who, status):
    _seed(hub, uscc)
    response = client.get(path, headers=hub.headers(who) if who else {})
    assert response.status_code == status, response.text
    if status == 403:
        assert response.json()["error"]["code"] == "forbidden"


def test_list_filters_and_pages_newest_first_and_show_has_every_reason_and_the_raw(any_hub, uscc):
    _seed(any_hub, uscc)
    admin = any_hub.headers("admin")
    with any_hub.client() as c:
        page = c.get("/api/v1/quarantine", params={"limit": 2}, headers=admin).json()
        rest = c.get("/api/v1/quarantine", params={"limit": 2, "offset": 2}, headers=admin).json()
        intake = c.get("/api/v1/quarantine", params={"source": "intake"}, headers=admin).json()
        scjg = c.get("/api/v1/quarantine", params={"agency": "scjg"}, headers=admin).json()
        bad_source = c.get("/api/v1/quarantine", params={"source": "email"}, headers=admin)
        refs = [i["record_ref"] for i in page["items"] + rest["items"]]
        assert (page["total"], len(page["items"]), len(rest["items"])) == (4, 2, 2)
        assert refs == ["g.jsonl record 1", "BAD-2", "BAD-1", "BAD-0"]
        assert [i["record_ref"] for i in intake["items"]] == ["g.jsonl record 1"] and scjg["total"] == 3
        assert bad_source.status_code == 422
        qid = page["items"][1]["id"]
        shown = c.get(f"/api/v1/quarantine/{qid}", headers=admin).json()
        assert shown["agency"] == "SCJG" and "打板子" in shown["raw"]
        assert "CF_CFLB[0]" in {r["field"] for r in shown["reasons"]} and all(r["reason"] for r in shown["reasons"])
        assert c.get("/api/v1/quarantine/99999", headers=admin).status_code == 404
        assert c.get(f"/api/v1/quarantine/{2**64}", headers=admin).status_code == 422  # no 500 from PostgreSQL
        assert c.get(f"/api/v1/quarantine?offset={2**64}", headers=admin).status_code == 422


def test_a_submission_refused_twice_retried_and_corrected(hub, client, uscc):
    bad = violation(uscc, "SCJG", "R-9", CF_CFLB=["打板子"])
    for _ in range(2):
        client.post("/api/v1/violations", json={"records": [bad]}, headers=hub.headers("scjg"))
    with Session(hub.engine) as s:
        (row,) = s.exec(select(QuarantinedRecord)).all()  # refused twice: one row, its reasons refreshed

    (outcome,) = retry(hub.engine, [row.id], hub.runtime.registry, actor="cli:op.zhang")
    assert outcome.result == "refused" and "CF_CFLB[0]" in {r["field"] for r in outcome.reasons}
    with Session(hub.engine) as s:
        (row,) = s.exec(select(QuarantinedRecord)).all()  # the retry's own refusal added no row
        assert row.released_at is None
        assert s.exec(select(AuditEntry.action).where(AuditEntry.action == "quarantine.retry")).all() == ["quarantine.retry"]

    fixed = violation(uscc, "SCJG", "R-9")
    assert client.post("/api/v1/violations", json={"records": [fixed]}, headers=hub.headers("scjg")).json()["created"] == 1
    with Session(hub.engine) as s:
        (row,) = s.exec(select(QuarantinedRecord)).all()
    assert row.released_at is not None and row.release_note.startswith("superseded")
    assert client.get("/api/v1/quarantine", headers=hub.headers("admin")).json()["total"] == 0


@pytest.mark.parametrize(("params", "parameter"), [({"agency": "SC\x00"}, "agency"), ({"source": "filedrop"}, "source")])
def test_list_refuses_control_characters_and_unknown_sources_naming_the_parameter(hub, client, params, parameter):
    """No source writes 'filedrop' (file-drop pulls are 'pull'); a NUL would reach PostgreSQL as a 500."""
    response = client.get("/api/v1/quarantine", params=params, headers=hub.headers("admin"))
    assert response.status_code == 422, response.text
    assert parameter in response.text
