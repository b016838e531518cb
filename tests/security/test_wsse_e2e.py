"""WS-Security end to end: the hub and the sandbox's 地税局 (DSJ) on 127.0.0.1, as shipped.

dsj.toml demands WS-Security; given a PKI, the sandbox DSJ checks the UsernameToken and the
signature of the hub's signing key it has on file, and signs its answers. The hub is wired only
through its Settings (the PKI directory), the data file and the sandbox's overrides and
credentials: a licence goes out and the agency's penalties come back. A hub whose signing key is
not the one DSJ trusts, or that lacks the password, gets nothing recorded by the agency.
"""

from __future__ import annotations

import json
import shutil
from contextlib import closing
from pathlib import Path

import pytest

from adapters.base import Cursor, OutboundMessage
from adapters.soap import reset_clients
from certs.pki import PkiLayout
from contracts.mapping import licence_to_native
from contracts.records import LicenceGrant
from hub.db import session_scope
from hub.errors import ConfigurationError, FatalError
from hub.history import company_history, find_company
from hub.intake import RawRecord, import_licences
from hub.operations import sync_agencies
from hub.runtime import HubRuntime
from hub.settings import Settings
from sandbox.cluster import start_sandbox
from tests.helpers import grant


@pytest.fixture(autouse=True)
def _fresh_soap_clients():
    yield
    reset_clients()  # zeep clients are cached per process; each test brings its own keys


@pytest.fixture
def dsj(tmp_path, pki, monkeypatch):
    """The sandbox DSJ demanding WS-Security; its password is where dsj.toml's reference looks."""
    with start_sandbox(tmp_path / "sandbox", codes=["DSJ"], pki_dir=pki.root) as sandbox:
        assert set(sandbox.env) == {"HUB_DSJ_WSSE_PASSWORD"}
        for name, value in sandbox.env.items():
            monkeypatch.setenv(name, value)
        yield sandbox


def _runtime(tmp_path: Path, pki_root: Path, overrides) -> HubRuntime:
    settings = Settings(data_dir=tmp_path / "hub", database_url=None, broker_url=None, pki_dir=pki_root)
    runtime = HubRuntime(settings, overrides=overrides)
    runtime.init_database()
    return runtime


def _message(runtime: HubRuntime, n: int) -> OutboundMessage:
    spec = runtime.agency("DSJ")
    native = licence_to_native(LicenceGrant.model_validate(grant(n)), spec.licence_mapping)
    return OutboundMessage(f"wsse-e2e-{n}", f"licence-{n}", native)


def test_the_hub_pushes_to_and_pulls_from_dsj_with_ws_security(tmp_path, pki, dsj):
    record = grant(1)
    dsj.books["DSJ"].add_penalty(subject_name=record["XK_XDR_MC"], uscc=record["XK_XDR_SHXYM"])
    runtime = _runtime(tmp_path, pki.root, dsj.overrides)
    try:
        with session_scope(runtime.engine) as session:
            import_licences(session, [RawRecord(1, record, json.dumps(record))], runtime.registry, actor="test")
        outcome = list(sync_agencies(runtime, ["DSJ"]))
        with session_scope(runtime.engine) as session:
            history = company_history(session, find_company(session, record["XK_XDR_SHXYM"]))
    finally:
        runtime.dispose()
    assert all(ok for _, ok in outcome), outcome
    [received] = dsj.books["DSJ"].received.values()
    assert received.payload["xiangDuiRen.tongYiDaiMa"] == record["XK_XDR_SHXYM"]
    assert [d.state for lic in history.licences for d in lic.deliveries if d.agency == "DSJ"] == ["delivered"]
    assert [v.agency for v in history.violations] == ["DSJ"]


def _impostor_pki(tmp_path: Path, pki: PkiLayout, foreign_pki: PkiLayout) -> Path:
    """A hub PKI whose signing key DSJ never saw; it still knows DSJ's real certificate."""
    root = tmp_path / "impostor-pki"
    shutil.copytree(foreign_pki.root, root)
    shutil.copyfile(pki.party("DSJ").signing_cert, root / "agencies" / "DSJ" / "signing.pem")
    return root


def test_dsj_refuses_a_hub_whose_signing_key_it_does_not_trust(tmp_path, pki, foreign_pki, dsj):
    runtime = _runtime(tmp_path, _impostor_pki(tmp_path, pki, foreign_pki), dsj.overrides)
    try:
        with closing(runtime.adapter_for("DSJ")) as adapter:
            # the agency's own refusal (a signed soap:Client fault): resending will not help
            with pytest.raises(FatalError, match="SOAP fault Client: WS-Security: signature does not verify"):
                adapter.deliver([_message(runtime, 2)])
            with pytest.raises(FatalError, match="SOAP fault Client: WS-Security: signature does not verify"):
                adapter.fetch(Cursor())
    finally:
        runtime.dispose()
    assert dsj.books["DSJ"].received == {}


def test_a_hub_without_the_password_is_stopped_before_it_sends(tmp_path, pki, dsj, monkeypatch):
    monkeypatch.delenv("HUB_DSJ_WSSE_PASSWORD")
    runtime = _runtime(tmp_path, pki.root, dsj.overrides)
    try:
        with pytest.raises(ConfigurationError, match="HUB_DSJ_WSSE_PASSWORD"):
            runtime.adapter_for("DSJ")
    finally:
        runtime.dispose()
    assert dsj.books["DSJ"].received == {}
