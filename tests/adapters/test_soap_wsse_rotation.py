"""WS-Security and the agency's certificate lifecycle, with the sandbox 地税局 (DSJ) on 127.0.0.1.

An answer counts only when signed with an agency certificate valid now; during a rotation
overlap the previous certificate still counts (until the overlap ends); and a running process
notices a rotation without a restart. Certificates are made at test time (certs.pki).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters import AdapterContext, TlsFiles, build_adapter
from adapters.base import Cursor
from adapters.soap import reset_clients
from certs.lifecycle import rotate
from certs.pki import (
    PkiLayout,
    init_pki,
    issue_leaf,
    load_certificate,
    load_private_key,
    write_certificate,
    write_private_key,
)
from hub.errors import ConfigurationError, FatalError, RefusedInput
from sandbox.soap_agencies import default_book, start_soap_agency
from sandbox.soap_wsse import AgencyWsse
from test_soap import soap_messages, soap_spec  # same directory: pytest puts it on sys.path

PASSWORD = "dsj-exchange-password"  # noqa: S105 - a test credential for a loopback sandbox


@pytest.fixture
def pki(tmp_path) -> PkiLayout:
    return init_pki(tmp_path / "pki", parties=[("DSJ", "地税局南开分局")])


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    reset_clients()


def _policy(pki: PkiLayout, *, agency_key: bytes | None = None, agency_cert: bytes | None = None) -> AgencyWsse:
    party = pki.party("DSJ")
    return AgencyWsse(hub_cert_pem=pki.hub.signing_cert.read_bytes(),
                      agency_key_pem=agency_key or party.signing_key.read_bytes(),
                      agency_cert_pem=agency_cert or party.signing_cert.read_bytes(),
                      username="shenguan-hub", password=PASSWORD)  # fmt: skip


def _adapter(endpoint: str, tmp_path: Path, pki: PkiLayout, agency_cert: Path | None = None):
    spec = soap_spec("DSJ", endpoint, wsse={"username": "shenguan-hub"})
    tls = TlsFiles(hub_signing_cert=pki.hub.signing_cert, hub_signing_key=pki.hub.signing_key,
                   agency_cert=agency_cert or pki.party("DSJ").signing_cert)  # fmt: skip
    context = AdapterContext(work_dir=tmp_path, secret=PASSWORD, tls=tls, connect_timeout=1.0, read_timeout=2.0)
    return spec, build_adapter(spec, context)


def _call(operation: str, spec, adapter, agency):
    messages = soap_messages(spec, range(1, 2))
    if operation == "fetch":
        agency.book.receive(messages[0].message_id, messages[0].payload)
        return adapter.fetch(Cursor())
    return adapter.deliver(messages)


@pytest.mark.parametrize("operation", ["deliver", "fetch"])
def test_an_answer_signed_under_an_expired_agency_certificate_is_a_configuration_error(operation, pki, tmp_path):
    """The agency certificate on file expired 100 days ago: its signature proves nothing any more,
    and no retry or quarantine helps; someone must install the agency's current certificate."""
    party, now = pki.party("DSJ"), dt.datetime.now(dt.UTC)
    expired, key = issue_leaf("signing", load_certificate(party.signing_cert).subject,
                              ca_cert=load_certificate(pki.ca_cert), ca_key=load_private_key(pki.ca_key),
                              now=now - dt.timedelta(days=200), validity_days=100)  # fmt: skip
    write_certificate(party.signing_cert, expired)
    write_private_key(party.signing_key, key)
    agency = start_soap_agency("DSJ", book=default_book("DSJ"), security=_policy(pki))
    try:
        spec, adapter = _adapter(agency.endpoint, tmp_path, pki)
        with pytest.raises(ConfigurationError, match="no agency certificate on file is valid now") as caught:
            _call(operation, spec, adapter, agency)
    finally:
        agency.stop()
    assert type(caught.value) is ConfigurationError


@pytest.mark.parametrize("reference", ["signing.pem", "accepted-signing.pem"])
@pytest.mark.parametrize(("overlap_days", "accepted"), [(14, True), (0, False)])
def test_during_the_rotation_overlap_the_agency_may_still_sign_with_its_previous_key(
    reference, overlap_days, accepted, pki, tmp_path
):
    """Right after `hub certs rotate DSJ` the agency has not switched yet: its answers signed with the
    previous key count until the overlap ends, whether [tls] names its certificate or its bundle."""
    party = pki.party("DSJ")
    old_key, old_cert = party.signing_key.read_bytes(), party.signing_cert.read_bytes()
    rotate(pki.root, "DSJ/signing", overlap_days=overlap_days)
    agency = start_soap_agency("DSJ", book=default_book("DSJ"),
                               security=_policy(pki, agency_key=old_key, agency_cert=old_cert))  # fmt: skip
    try:
        spec, adapter = _adapter(agency.endpoint, tmp_path, pki, agency_cert=party.directory / reference)
        if accepted:
            assert len(_call("fetch", spec, adapter, agency).records) >= 1
        else:  # the overlap is over: the old key is as good as anyone's
            with pytest.raises(RefusedInput, match="does not verify"):
                _call("fetch", spec, adapter, agency)
    finally:
        agency.stop()


def test_a_running_process_uses_the_rotated_keys_without_a_restart(pki, tmp_path):
    """zeep clients are cached per process: after a rotation of both sides the cached one must not
    keep signing with the hub's rotated-out key, nor verify against DSJ's rotated-out certificate."""
    agency = start_soap_agency("DSJ", book=default_book("DSJ"), security=_policy(pki))
    try:
        spec, before = _adapter(agency.endpoint, tmp_path, pki)
        _call("deliver", spec, before, agency)
        rotate(pki.root, "hub/signing", overlap_days=0)
        rotate(pki.root, "DSJ/signing", overlap_days=0)
        agency.server.security = _policy(pki)  # the agency switched at once: only the new keys count
        spec, after = _adapter(agency.endpoint, tmp_path, pki)
        messages = soap_messages(spec, range(2, 3))
        assert after.deliver(messages)[0].message_id == messages[0].message_id
        with pytest.raises(FatalError, match="WS-Security"):  # built before the rotation: the retired key
            before.deliver(soap_messages(spec, range(3, 4)))
    finally:
        agency.stop()
