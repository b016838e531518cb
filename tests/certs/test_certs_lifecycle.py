"""Expiry levels and rotation with an overlap, judged at chosen moments (no sleeping)."""

from __future__ import annotations

import datetime as dt
import stat

import pytest

from certs.dropseal import Reason, seal_manifest, verify_manifest
from certs.lifecycle import Level, accepted_certificates, accepted_keys, cert_status, rotate, worst_level
from certs.pki import fingerprint, init_pki, load_certificate, load_private_key
from certs.sealer import DropSeal
from contracts.registry import load_registry
from hub.errors import ConfigurationError, RefusedInput
from hub.runtime import HubRuntime
from hub.settings import Settings
from trust_data import PARTIES, T0

DAY = dt.timedelta(days=1)


def _by_name(statuses):
    return {s.name: s for s in statuses}


@pytest.mark.parametrize(
    ("before_expiry", "days_left", "level"),
    [
        (31 * DAY, 31, Level.OK),
        (30 * DAY, 30, Level.WARN),
        (8 * DAY, 8, Level.WARN),
        (7 * DAY, 7, Level.CRITICAL),
        (DAY, 1, Level.CRITICAL),
        (dt.timedelta(hours=1), 0, Level.CRITICAL),
        (dt.timedelta(0), 0, Level.EXPIRED),
        (-DAY, -1, Level.EXPIRED),
    ],
)
def test_status_level_by_days_left(fresh_pki, before_expiry, days_left, level):
    not_after = load_certificate(fresh_pki.party("SCJG").client_cert).not_valid_after_utc
    status = _by_name(cert_status(fresh_pki.root, now=not_after - before_expiry))["SCJG/client"]
    assert (status.days_left, status.level) == (days_left, level)
    assert status.not_after == not_after


def test_status_lists_every_certificate_with_subject_and_serial(fresh_pki):
    statuses = _by_name(cert_status(fresh_pki.root, now=T0))
    assert set(statuses) == {"ca"} | {f"{p}/{k}" for p in ("hub", "SCJG", "SWJ", "REG") for k in ("server", "client", "signing")}
    hub = statuses["hub/server"]
    assert "CN=HUB" in hub.subject and hub.serial == format(load_certificate(fresh_pki.hub.server_cert).serial_number, "x")
    assert worst_level(list(statuses.values())) is Level.OK


def test_worst_level_is_the_most_urgent(fresh_pki):
    not_after = load_certificate(fresh_pki.hub.client_cert).not_valid_after_utc
    assert worst_level(cert_status(fresh_pki.root, now=not_after - 3 * DAY)) is Level.CRITICAL
    assert worst_level(cert_status(fresh_pki.root, now=not_after)) is Level.EXPIRED


def test_rotation_keeps_the_old_certificate_accepted_until_the_overlap_ends(fresh_pki):
    old = load_certificate(fresh_pki.party("SCJG").signing_cert)
    rotated_at = T0 + 10 * DAY
    assert rotate(fresh_pki.root, "SCJG/signing", overlap_days=14, now=rotated_at) == ["SCJG/signing"]
    new = load_certificate(fresh_pki.party("SCJG").signing_cert)
    assert new.serial_number != old.serial_number and new.subject == old.subject

    during = [fingerprint(c) for c in accepted_certificates(fresh_pki.root, "SCJG/signing", rotated_at + 13 * DAY)]
    after = [fingerprint(c) for c in accepted_certificates(fresh_pki.root, "SCJG", rotated_at + 15 * DAY)]
    assert during == [fingerprint(new), fingerprint(old)]
    assert after == [fingerprint(new)]
    bundle = (fresh_pki.party("SCJG").directory / "accepted-signing.pem").read_bytes()
    assert bundle.count(b"BEGIN CERTIFICATE") == 2

    names = {s.name for s in cert_status(fresh_pki.root, now=rotated_at + DAY)}
    assert "SCJG/signing.previous" in names
    assert "SCJG/signing.previous" not in {s.name for s in cert_status(fresh_pki.root, now=rotated_at + 15 * DAY)}
    for key in (fresh_pki.party("SCJG").directory / "previous").glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_a_drop_signed_with_the_old_certificate_verifies_during_overlap_and_is_refused_after(fresh_pki):
    files = fresh_pki.party("SCJG")
    old_cert, old_key = load_certificate(files.signing_cert), load_private_key(files.signing_key)
    token = seal_manifest({"batch_id": "b1"}, signing_cert=old_cert, signing_key=old_key)
    rotated_at = T0 + DAY
    rotate(fresh_pki.root, "SCJG", overlap_days=7, now=rotated_at)
    ca = load_certificate(fresh_pki.ca_cert)

    def check(at):
        accepted = accepted_certificates(fresh_pki.root, "SCJG/signing", at)
        return verify_manifest(token, trusted_ca=ca, expected_signer="SCJG", accepted=accepted, now=at)

    assert check(rotated_at + 6 * DAY) == {"batch_id": "b1"}
    with pytest.raises(RefusedInput) as refused:
        check(rotated_at + 8 * DAY)
    assert refused.value.reason == Reason.UNKNOWN_SIGNER

    # The hub's DropSeal reads the rotation record at each verification.
    clock = [rotated_at + 2 * DAY]
    seal = DropSeal.from_pki(fresh_pki.root, own="hub", peer="SCJG", clock=lambda: clock[0])
    manifest = b'{"batch_id": "b1"}'
    sidecar = {"manifest.jws": seal_manifest(manifest, signing_cert=old_cert, signing_key=old_key).encode()}
    seal.verify_manifest(manifest, sidecar)
    clock[0] = rotated_at + 9 * DAY
    with pytest.raises(RefusedInput, match="no longer"):
        seal.verify_manifest(manifest, sidecar)


def test_files_encrypted_to_the_old_certificate_still_open_during_overlap(fresh_pki):
    old_cert = load_certificate(fresh_pki.party("SCJG").signing_cert)
    hub_side = DropSeal.from_pki(fresh_pki.root, own="hub", peer="SCJG", clock=lambda: T0)
    stored_name, stored = hub_side.seal_file("licences.csv", "许可".encode())
    rotate(fresh_pki.root, "SCJG/signing", now=T0 + DAY)
    assert fingerprint(load_certificate(fresh_pki.party("SCJG").signing_cert)) != fingerprint(old_cert)
    assert len(accepted_keys(fresh_pki.root, "SCJG/signing", T0 + 2 * DAY)) == 2
    agency_side = DropSeal.from_pki(fresh_pki.root, own="SCJG", peer="hub", clock=lambda: T0 + 2 * DAY)
    assert agency_side.unseal_file(stored_name, stored) == "许可".encode()


def test_the_hub_as_deployed_opens_drops_encrypted_to_its_certificate_before_it_rotated(tmp_path):
    """The adapter's seal is built from the agency data file's [tls] paths, not from the PKI: it
    must still be given the hub's previous key for the overlap, or every such drop is refused.
    The runtime judges the overlap by the real clock: this PKI is issued today."""
    fresh_pki = init_pki(tmp_path / "pki", parties=PARTIES)
    # this PKI issues no GHFJ certificate: SCJG's stands in for the file-drop agency's
    agency_side = DropSeal.from_pki(fresh_pki.root, own="SCJG", peer="hub", clock=lambda: T0)
    stored_name, stored = agency_side.seal_file("penalties.xml", "处罚".encode())  # to the hub's certificate
    rotate(fresh_pki.root, "hub/signing")
    (tmp_path / "share").mkdir()
    overrides = {"GHFJ": {"endpoint": (tmp_path / "share").as_uri(),
                          "transport": {**load_registry()["GHFJ"].transport, "seal": "sign+encrypt"},
                          "tls": {"ca": "ca.pem", "agency_cert": "agencies/SCJG/signing.pem"}}}  # fmt: skip
    runtime = HubRuntime(Settings(data_dir=tmp_path / "hub", database_url=None, broker_url=None,
                                  pki_dir=fresh_pki.root), overrides=overrides)  # fmt: skip
    adapter = runtime.adapter_for("GHFJ")
    try:
        assert adapter.seal.unseal_file(stored_name, stored) == "处罚".encode()
    finally:
        adapter.close()


def test_a_second_rotation_forgets_entries_whose_overlap_ended(fresh_pki):
    rotate(fresh_pki.root, "SCJG/client", overlap_days=1, now=T0)
    rotate(fresh_pki.root, "SCJG/client", overlap_days=5, now=T0 + 3 * DAY)
    previous = sorted(p.name for p in (fresh_pki.party("SCJG").directory / "previous").iterdir())
    assert len(previous) == 2  # one .pem and its .key: the first overlap had ended
    assert len(accepted_certificates(fresh_pki.root, "SCJG/client", T0 + 4 * DAY)) == 2


@pytest.mark.parametrize("name", ["ca", "NOPE", "SCJG/bogus", "/signing"])
def test_rotate_refuses_what_it_cannot_rotate(fresh_pki, name):
    with pytest.raises(ConfigurationError):
        rotate(fresh_pki.root, name, now=T0)
