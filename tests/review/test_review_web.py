"""The reviewer's pages without a browser: a company page is audited as the API's lookups are."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session, select

from hub.audit import verify_chain
from hub.models import AuditEntry
from review_seed import TODAY


def _entries(hub) -> list[AuditEntry]:
    with Session(hub.engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action.startswith("review.")).order_by(AuditEntry.id)))


def test_a_company_page_leaves_its_lookup_and_its_check_in_the_audit_log(hub, client):
    uscc = hub.grant(1)
    hub.pulled()
    hub.violation(uscc, "SCJG", "SC-1", decided=TODAY - dt.timedelta(days=30))
    assert client.get(f"/companies/{uscc}", follow_redirects=False).status_code == 303  # no login: nothing read
    assert _entries(hub) == []

    client.post("/login", data={"token": hub.tokens["reviewer"], "next": "/"}, follow_redirects=False)
    page = client.get(f"/companies/{uscc}")
    assert page.status_code == 200 and "SC-1" in page.text
    assert [(e.action, e.subject, e.detail.get("case"), e.detail.get("via")) for e in _entries(hub)] == [
        ("review.history", f"company:{uscc}", None, "web")]

    checked = client.get(f"/companies/{uscc}", params={"case": "SP-2026-0815"})
    assert checked.status_code == 200 and 'id="verdict-badge"' in checked.text
    check, history = _entries(hub)[1:]
    assert (check.action, check.detail["case"]) == ("review.check", "SP-2026-0815")
    assert (history.action, history.detail["case"], history.detail["via"]) == ("review.history", "SP-2026-0815", "web")
    with Session(hub.engine) as s:
        assert verify_chain(s)[1] is None
