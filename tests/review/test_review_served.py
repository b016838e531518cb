"""Against the real `hub serve` (uvicorn on 127.0.0.1): a reviewer in headless Chromium, a regulator by client certificate.

The browser test drives Debian's chromium (/usr/bin/chromium) through Playwright's Python API;
it never downloads a browser. It is skipped when chromium is missing, and fails instead when
HUB_REQUIRE_SERVICES=1 (as in CI).
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
import time
from pathlib import Path

import httpx
import pytest

from review_seed import TODAY
from tests.helpers import REPO, make_uscc

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def _tls(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _need_chromium() -> None:
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
    if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.browser
def test_reviewer_searches_opens_a_company_and_sees_the_verdict_and_three_agencies(hub, serve, tmp_path):
    _need_chromium()
    from playwright.sync_api import sync_playwright

    uscc = make_uscc(8080)
    hub.grant(31, XK_XDR_SHXYM=uscc, XK_XDR_MC="天津海河餐饮管理有限公司")
    hub.grant(32, XK_XDR_SHXYM=uscc, XK_XDR_MC="天津海河餐饮管理有限公司", approval_item="NK-XF-003",
              XK_JDRQ="2025-06-01", XK_YXQZ="2025-06-01", XK_YXQZI="2099-12-31")  # fmt: skip
    hub.grant(33)  # another company, to be sure the search narrows down
    hub.pulled()
    hub.violation(uscc, "SCJG", "SC-101", severity="ordinary", decided=TODAY - dt.timedelta(days=40))
    hub.violation(uscc, "GSJ", "GS-202", severity="minor", penalties=("警告",), decided=TODAY - dt.timedelta(days=20))
    hub.violation(uscc, "XFZD", "XF-303", severity="serious", penalties=("罚款", "责令停产停业"),
                  decided=TODAY - dt.timedelta(days=200))  # fmt: skip
    base = serve()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1400})
            page.goto(base + "/")
            assert "/login" in page.url  # deny by default: the search page needs a login
            page.fill("input[name=token]", hub.tokens["reviewer"])
            page.click("button[type=submit]")
            page.fill("input[name=q]", "海河餐饮")
            page.fill("input[name=case]", "SP-2026-0815")
            page.click("#search")
            links = page.locator("a.company-link")
            assert links.count() == 1
            links.first.click()
            page.wait_for_selector("#verdict-badge")
            assert page.text_content("#company-name") == "天津海河餐饮管理有限公司"
            assert page.text_content("#verdict-badge").strip() == "RED"
            agencies = set(page.locator("#violations tr.violation").evaluate_all("rows => rows.map(r => r.dataset.agency)"))
            assert agencies == {"SCJG", "GSJ", "XFZD"}
            reasons = page.text_content("#reasons")
            assert "serious-violation" in reasons and "XFZD" in reasons and "ordinary-violation" in reasons
            assert page.locator("#timeline circle").count() == 3
            assert "SCJG: pending" in page.text_content("#licences")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "reviewer-company-page.png"), full_page=True)
            page.goto(base + "/status")
            assert page.locator("#agencies tr").count() == 1 + len(hub.runtime.registry)
            page.screenshot(path=str(ARTIFACTS / "reviewer-status-page.png"), full_page=True)
        finally:
            browser.close()


def test_a_regulator_authenticates_by_client_certificate_and_reads_only_its_own_feed(hub, serve):
    from certs.pki import init_pki

    pki = init_pki(hub.runtime.settings.resolved_pki_dir, parties=[("SCJG", "市场监管局"), ("GSJ", "国税局")])
    hub.grant(1)
    server = pki.hub
    base = serve("--certfile", str(server.cert("server")), "--keyfile", str(server.key("server")),
                 "--client-ca", str(pki.ca_cert))  # fmt: skip
    scjg = pki.party("SCJG")
    with httpx.Client(verify=_tls(pki.ca_cert, scjg.client_cert, scjg.client_key)) as c:
        own = c.get(base + "/api/v1/feeds/licences")
        assert own.status_code == 200 and own.json()["agency"] == "SCJG" and own.json()["items"]
        assert c.get(base + "/api/v1/feeds/licences", params={"agency": "GSJ"}).status_code == 403
        assert c.get(base + "/api/v1/companies", params={"q": "测试"}).status_code == 403
    with httpx.Client(verify=_tls(pki.ca_cert)) as anonymous:
        assert anonymous.get(base + "/api/v1/feeds/licences").status_code == 401
    signing = _tls(pki.ca_cert, scjg.cert("signing"), scjg.key("signing"))  # not a client certificate: no login
    with httpx.Client(verify=signing) as c:
        assert c.get(base + "/api/v1/feeds/licences").status_code == 401


@pytest.mark.parametrize(("level", "logs_requests"), [("INFO", True), ("WARNING", False)])
def test_the_server_logs_a_line_per_request_only_at_info_and_below(hub, serve, level, logs_requests):
    """From WARNING up (a proxy in front that logs requests), `hub serve` writes no line per request,
    but still the address it bound. A line names the caller as the audit log does, never by token."""
    uscc = hub.grant(1)
    base = serve(env={"HUB_LOG_LEVEL": level})
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    history = httpx.get(f"{base}/api/v1/companies/{uscc}/history", params={"case": "SP-LOG-1"},
                        headers=hub.headers("reviewer"), timeout=10)  # fmt: skip
    assert history.status_code == 200
    deadline = time.monotonic() + 5
    logged = serve.output[base]
    while logs_requests and not any("SP-LOG-1" in line for line in logged) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # a line that should not come has had its chance
    assert any("/healthz" in line for line in logged) is logs_requests
    assert any(base in line for line in logged)
    if logs_requests:
        line = next(line for line in logged if "SP-LOG-1" in line)
        assert f'"GET /api/v1/companies/{uscc}/history?case=SP-LOG-1 HTTP/1.1" 200 ' in line
        assert " ms reviewer:reviewer" in line
    assert not any(hub.tokens["reviewer"] in line for line in logged)
