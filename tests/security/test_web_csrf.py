"""The reviewer pages' sign-in: no form posted from another site signs anyone in or out (login CSRF),
and the way back after signing in keeps its query and never leaves this host.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from hub.api import create_app
from hub.api.auth import Role, add_token
from hub.runtime import HubRuntime
from hub.settings import Settings
from hub.web.pages import COOKIE


@pytest.fixture
def web(tmp_path):
    """A migrated hub's pages on SQLite, with one reviewer token; yields (client, token)."""
    tokens = tmp_path / "tokens.json"
    runtime = HubRuntime(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'hub.sqlite3'}",
                                  api_tokens_file=tokens, pki_dir=tmp_path / "no-pki"))  # fmt: skip
    runtime.init_database()
    token = add_token(tokens, name="li.ming", role=Role.REVIEWER)
    with TestClient(create_app(runtime), raise_server_exceptions=False) as client:  # Host: testserver
        yield client, token
    runtime.dispose()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),  # a sandboxed frame or a data: page
        ({"Origin": "http://testserver.evil.example"}, 403),
        ({"Referer": "https://evil.example/phish.html"}, 403),
        ({"Origin": "http://testserver"}, 303),
        ({"Referer": "http://testserver/login?next=/"}, 303),
        ({}, 303),  # curl and scripts send neither
        # behind a reverse proxy: the Host it forwards, with the default port written, or its own upstream name
        ({"Origin": "https://hub.example.gov.cn", "Host": "hub.example.gov.cn:443",
          "X-Forwarded-Proto": "https"}, 303),
        ({"Origin": "https://hub.example.gov.cn", "Host": "127.0.0.1:8000",
          "X-Forwarded-Host": "hub.example.gov.cn"}, 303),
        ({"Origin": "https://evil.example", "Host": "127.0.0.1:8000", "X-Forwarded-Host": "hub.example.gov.cn"}, 403),
        ({"Origin": "http://testserver:8080"}, 403),  # another port is another site
    ],
)  # fmt: skip
def test_login_and_logout_refuse_a_form_another_site_posted(web, headers, status):
    client, token = web
    login = client.post("/login", data={"token": token, "next": "/"}, headers=headers, follow_redirects=False)
    assert login.status_code == status
    assert (COOKIE in login.headers.get("set-cookie", "")) == (status == 303)
    client.cookies.set(COOKIE, token)
    logout = client.post("/logout", headers=headers, follow_redirects=False)
    assert logout.status_code == status
    assert (COOKIE in logout.headers.get("set-cookie", "")) == (status == 303)
    if status == 403:
        assert "another site" in login.text and login.headers["content-type"].startswith("text/html")


def test_the_way_back_after_login_keeps_the_query_encoded(web):
    client, token = web
    asked = "/companies/91120104MA05L8XJ3N?case=C-9&item=NK%20SC%2F001"
    to_login = client.get(asked, follow_redirects=False)
    assert to_login.status_code == 303
    location = urlsplit(to_login.headers["location"])
    assert location.path == "/login" and "&item" not in location.query  # one parameter, encoded
    assert parse_qs(location.query) == {"next": [asked]}
    form = client.get(to_login.headers["location"])
    assert 'name="next" value="/companies/91120104MA05L8XJ3N?case=C-9&amp;item=NK%20SC%2F001"' in form.text
    back = client.post("/login", data={"token": token, "next": asked}, follow_redirects=False)
    assert (back.status_code, urlsplit(back.headers["location"]).query) == (303, "case=C-9&item=NK%20SC%2F001")


@pytest.mark.parametrize("target", ["//evil.example", "/\\evil.example", "/\\/evil.example", "/\t/evil.example",
                                    "https://evil.example", "evil.example"])  # fmt: skip
def test_the_way_back_never_leaves_this_host(web, target):
    client, token = web
    assert 'name="next" value="/"' in client.get("/login", params={"next": target}).text
    back = client.post("/login", data={"token": token, "next": target}, follow_redirects=False)
    assert back.headers["location"] == "/"
