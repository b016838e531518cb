"""Mutual TLS end to end: the hub and the sandbox's JJZD (REST) and GSJ (SOAP) on 127.0.0.1.

Both sides of the handshake are shown: a hub with a valid client certificate delivers and
pulls; a hub without one, or with one from another CA, is refused by the agency; and the hub
refuses an agency whose server certificate its CA did not issue. Nothing reaches the agency's
books when the handshake fails.
"""

from __future__ import annotations

import json
import socket
from contextlib import closing
from pathlib import Path

import pytest

from adapters import AdapterContext, TlsFiles, build_adapter
from adapters.base import Cursor, OutboundMessage
from adapters.soap import reset_clients
from contracts.mapping import licence_to_native
from contracts.records import LicenceGrant
from hub.db import session_scope
from hub.errors import ConfigurationError
from hub.history import company_history, find_company
from hub.intake import RawRecord, import_licences
from hub.operations import sync_agencies
from hub.runtime import HubRuntime
from hub.settings import Settings
from sandbox.cluster import MTLS_CODES, start_sandbox
from tests.helpers import grant

CODES = list(MTLS_CODES)


@pytest.fixture(autouse=True)
def _fresh_soap_clients():
    yield
    reset_clients()  # zeep clients are cached per process; each test brings its own certificates


def _runtime(tmp_path: Path, pki_root: Path, overrides) -> HubRuntime:
    settings = Settings(data_dir=tmp_path / "hub", database_url=None, broker_url=None, pki_dir=pki_root)
    runtime = HubRuntime(settings, overrides=overrides)
    runtime.init_database()
    return runtime


def _road_transport_grant(n: int) -> dict:
    # routed to JJZD (NK-JT-*) and to GSJ (receives everything)
    return grant(n, approval_item="NK-JT-003", approval_item_name="道路货物运输经营许可", industry="道路运输")


def test_hub_with_its_client_certificate_delivers_and_pulls_over_mtls(tmp_path, pki):
    with start_sandbox(tmp_path / "sandbox", codes=CODES, pki_dir=pki.root) as sandbox:
        assert all(sandbox.overrides[c]["endpoint"].startswith("https://127.0.0.1:") for c in CODES)
        record = _road_transport_grant(1)
        for book in sandbox.books.values():
            book.add_penalty(subject_name=record["XK_XDR_MC"], uscc=record["XK_XDR_SHXYM"])
        runtime = _runtime(tmp_path, pki.root, sandbox.overrides)
        try:
            with session_scope(runtime.engine) as session:
                import_licences(session, [RawRecord(1, record, json.dumps(record))], runtime.registry, actor="test")
            outcome = list(sync_agencies(runtime, CODES))
            with session_scope(runtime.engine) as session:
                history = company_history(session, find_company(session, record["XK_XDR_SHXYM"]))
        finally:
            runtime.dispose()
        assert all(ok for _, ok in outcome), outcome
        for code, book in sandbox.books.items():
            assert len(book.received) == 1, code  # the licence arrived at both agencies
    deliveries = {d.agency: d.state for lic in history.licences for d in lic.deliveries if d.agency in CODES}
    assert deliveries == {"JJZD": "delivered", "GSJ": "delivered"}
    assert {v.agency for v in history.violations} == {"JJZD", "GSJ"}


def _no_client_certificate(pki, foreign_pki) -> TlsFiles:
    return TlsFiles(ca=pki.ca_cert)


def _client_certificate_from_another_ca(pki, foreign_pki) -> TlsFiles:
    return TlsFiles(ca=pki.ca_cert, client_cert=foreign_pki.hub.client_cert, client_key=foreign_pki.hub.client_key)


def _server_only_certificate(pki, foreign_pki) -> TlsFiles:
    # the right CA, the wrong purpose: its extended key usage is serverAuth only
    return TlsFiles(ca=pki.ca_cert, client_cert=pki.hub.server_cert, client_key=pki.hub.server_key)


def _message(spec, n: int) -> OutboundMessage:
    payload = licence_to_native(LicenceGrant.model_validate(_road_transport_grant(n)), spec.licence_mapping)
    return OutboundMessage(f"{spec.code}-mtls-{n}", f"licence-{n}", payload)


@pytest.mark.parametrize("code", CODES)
@pytest.mark.parametrize("tls", [_no_client_certificate, _client_certificate_from_another_ca,
                                 _server_only_certificate])  # fmt: skip
def test_the_agency_refuses_a_hub_without_a_valid_client_certificate(tmp_path, pki, foreign_pki, code, tls):
    with start_sandbox(tmp_path / "sandbox", codes=[code], pki_dir=pki.root) as sandbox:
        runtime = HubRuntime(Settings(data_dir=tmp_path / "hub"), overrides=sandbox.overrides)
        spec = runtime.agency(code)
        context = AdapterContext(work_dir=tmp_path, tls=tls(pki, foreign_pki), connect_timeout=2, read_timeout=5)
        with closing(build_adapter(spec, context)) as adapter:
            with pytest.raises(ConfigurationError, match=f"{code}.*TLS") as refused:
                adapter.deliver([_message(spec, 2)])
            with pytest.raises(ConfigurationError, match="TLS"):
                adapter.fetch(Cursor())
        assert sandbox.books[code].received == {}
    assert "PRIVATE KEY" not in str(refused.value)


@pytest.mark.parametrize("code", CODES)
def test_the_hub_refuses_an_agency_whose_server_certificate_is_from_another_ca(tmp_path, pki, foreign_pki, code):
    # the agency's certificate (and the client CA it trusts) come from an impostor's PKI
    with start_sandbox(tmp_path / "sandbox", codes=[code], pki_dir=foreign_pki.root) as sandbox:
        runtime = _runtime(tmp_path, pki.root, sandbox.overrides)
        try:
            with closing(runtime.adapter_for(code)) as adapter:
                spec = runtime.agency(code)
                with pytest.raises(ConfigurationError, match="TLS.*(certificate verify failed|CERTIFICATE_VERIFY)"):
                    adapter.deliver([_message(spec, 3)])
        finally:
            runtime.dispose()
        assert sandbox.books[code].received == {}


def test_without_a_pki_the_sandbox_stays_plain_http_and_the_hub_presents_no_certificate(tmp_path):
    with start_sandbox(tmp_path / "sandbox", codes=CODES) as sandbox:
        runtime = _runtime(tmp_path, tmp_path / "no-pki", sandbox.overrides)
        try:
            for code in CODES:
                assert sandbox.overrides[code]["endpoint"].startswith("http://127.0.0.1:")
                with closing(runtime.adapter_for(code)) as adapter:
                    assert adapter.fetch(Cursor()).records is not None
        finally:
            runtime.dispose()


@pytest.mark.parametrize("code", CODES)
def test_proxy_and_ca_bundle_from_the_environment_do_not_reach_an_agency(tmp_path, pki, foreign_pki, code, monkeypatch):
    # A worker started with a site-wide proxy or CA bundle still talks to the agency directly,
    # verifying it against the agency's CA from the data file, not the environment's.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{probe.getsockname()[1]}"  # closed once the block ends
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, nowhere)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(foreign_pki.ca_cert))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(foreign_pki.ca_cert))
    with start_sandbox(tmp_path / "sandbox", codes=[code], pki_dir=pki.root) as sandbox:
        runtime = _runtime(tmp_path, pki.root, sandbox.overrides)
        try:
            with closing(runtime.adapter_for(code)) as adapter:
                spec = runtime.agency(code)
                [receipt] = adapter.deliver([_message(spec, 4)])
        finally:
            runtime.dispose()
        assert list(sandbox.books[code].received) == [receipt.message_id]


def test_production_certificates_named_by_absolute_paths_need_no_pki_directory(tmp_path, pki):
    """The bureau's own certificates, elsewhere, and no dev PKI under HUB_PKI_DIR: mTLS still works."""
    with start_sandbox(tmp_path / "sandbox", codes=["JJZD"], pki_dir=pki.root) as sandbox:
        tls = {"ca": str(pki.ca_cert), "client_cert": str(pki.hub.client_cert), "client_key": str(pki.hub.client_key)}
        overrides = {"JJZD": {**sandbox.overrides["JJZD"], "tls": tls}}
        runtime = _runtime(tmp_path, tmp_path / "no-pki-here", overrides)
        try:
            record = _road_transport_grant(1)
            with session_scope(runtime.engine) as session:
                import_licences(session, [RawRecord(1, record, json.dumps(record))], runtime.registry, actor="test")
            outcome = list(sync_agencies(runtime, ["JJZD"]))
        finally:
            runtime.dispose()
        assert all(ok for _, ok in outcome), outcome
        assert len(sandbox.books["JJZD"].received) == 1
