"""The reviewer's pages without a browser: a company page is audited as the API's lookups are, its
links keep what the reviewer asked for, and a bad parameter is answered by a page, not JSON."""

from __future__ import annotations

import datetime as dt
import html
import re
from urllib.parse import parse_qs

import pytest
from sqlmodel import Session, select

from hub.audit import verify_chain
from hub.clock import utcnow
from hub.db import session_scope
from hub.models import AuditEntry, Delivery, DeliveryState
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


def _badge(page) -> str:
    return re.search(r'id="verdict-badge">(\w+)<', page.text).group(1)


def test_the_show_hidden_toggle_keeps_the_case_and_the_item_so_the_verdict_stays(hub, client, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.violation(uscc, "SCJG", "V1", severity="ordinary")
    hub.pulled()
    client.cookies.set("hub_token", hub.tokens["auditor"])
    page = client.get(f"/companies/{uscc}", params={"case": "C-1", "item": "NK-SC-001"})
    toggle = html.unescape(re.search(r'<a href="(\?[^"]*include_hidden[^"]*)"', page.text).group(1))
    assert parse_qs(toggle[1:]) == {"case": ["C-1"], "item": ["NK-SC-001"], "include_hidden": ["true"]}
    toggled = client.get(f"/companies/{uscc}{toggle}")
    assert _badge(toggled) == _badge(page) == "RED"
    assert "item NK-SC-001" in toggled.text
    unchecked = client.get(f"/companies/{uscc}", params={"include_hidden": "true"})  # the check form keeps the view
    assert '<input type="hidden" name="include_hidden" value="true">' in unchecked.text


def test_a_company_without_any_identifier_has_a_working_link(hub, client):
    hub.grant(9, XK_XDR_SHXYM=None, XK_XDR_LB="自然人", XK_XDR_MC="李四")
    client.cookies.set("hub_token", hub.tokens["reviewer"])
    results = client.get("/", params={"q": "李四", "case": "C-7"})
    [link] = re.findall(r'class="company-link" href="([^"]*)"', results.text)
    page = client.get(html.unescape(link))
    assert page.status_code == 200 and '<h1 id="company-name">李四</h1>' in page.text
    assert "case C-7" in page.text


@pytest.mark.parametrize(
    ("method", "path", "data", "says"),
    [
        ("POST", "/login", {"token": "t" * 201, "next": "/"}, "token"),
        ("POST", "/login", {"next": "/"}, "token"),
        ("GET", "/?q=" + "q" * 201, None, "q"),
    ],
)  # fmt: skip
def test_an_invalid_form_or_query_on_a_page_is_answered_by_a_page(hub, client, method, path, data, says):
    client.cookies.set("hub_token", hub.tokens["reviewer"])
    response = client.request(method, path, data=data, follow_redirects=False)
    assert response.status_code == 422 and response.headers["content-type"].startswith("text/html")
    assert f"{says}: " in html.unescape(response.text)


def test_times_on_the_pages_say_they_are_utc(hub, client, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    with session_scope(hub.engine) as session:  # one delivery acknowledged, as a push would record it
        delivery = session.exec(select(Delivery)).first()
        delivery.state, delivery.ack_id, delivery.acked_at = DeliveryState.DELIVERED, "ACK-1", utcnow()
    client.cookies.set("hub_token", hub.tokens["admin"])
    stamps = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(?! UTC)")
    for path in (f"/companies/{uscc}", "/status"):
        page = client.get(path)
        assert page.status_code == 200 and re.search(r"\d\d:\d\d UTC", page.text)
        assert stamps.findall(page.text) == [], path
