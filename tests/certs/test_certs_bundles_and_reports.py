"""After rotations and re-issues: accepted bundles stay true, reports grade what is in use, one bad
file does not hide the others, and the files are written durably. Judged at chosen moments."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from certs.dropseal import seal_manifest
from certs.lifecycle import Level, cert_status, rotate, worst_level
from certs.pki import fingerprint, init_pki, load_certificate, load_certificates, load_private_key
from certs.sealer import DropSeal
from hub.errors import RefusedInput
from hub.jobs import check_certificates_job
from hub.runtime import HubRuntime
from hub.settings import Settings
from hub.status import _certificates
from trust_data import PARTIES, T0

DAY = dt.timedelta(days=1)


def _seal_from_bundle(pki, at: dt.datetime) -> DropSeal:
    """The hub's seal as an agency data file's [tls] builds it: from files, the peer's bundle."""
    return DropSeal.from_files(signing_cert=pki.hub.signing_cert, signing_key=pki.hub.signing_key,
                               trusted_ca=pki.ca_cert, clock=lambda: at,
                               peer_cert=pki.party("SCJG").directory / "accepted-signing.pem")  # fmt: skip


def _signed_by(cert_path: Path, key_path: Path) -> tuple[bytes, dict[str, bytes]]:
    manifest = b'{"batch_id": "b1"}'
    token = seal_manifest(manifest, signing_cert=load_certificate(cert_path), signing_key=load_private_key(key_path))
    return manifest, {"manifest.jws": token.encode()}


# --- accepted bundles ------------------------------------------------------------------------
def test_init_reissuing_a_rotated_certificate_rewrites_its_bundle(fresh_pki):
    """A short-lived certificate from a rotation expires; `hub certs init` re-issues it. The bundle must
    then name the new certificate first: seals built from it verify it and encrypt to it."""
    files = fresh_pki.party("SCJG")
    rotate(fresh_pki.root, "SCJG/signing", now=T0 + DAY, validity_days=10)
    later = T0 + 30 * DAY
    assert "SCJG/signing" in init_pki(fresh_pki.root, parties=PARTIES, now=later).issued
    current = load_certificate(files.signing_cert)
    bundle = load_certificates(files.directory / "accepted-signing.pem")
    assert [fingerprint(c) for c in bundle] == [fingerprint(current)]  # the rotated-out one's overlap ended too

    seal = _seal_from_bundle(fresh_pki, later + DAY)
    seal.verify_manifest(*_signed_by(files.signing_cert, files.signing_key))
    assert fingerprint(seal._peer) == fingerprint(current)  # what outbound files are encrypted to


def test_init_force_forgets_previous_certificates_of_the_replaced_ca(fresh_pki):
    files = fresh_pki.party("SCJG")
    rotate(fresh_pki.root, "SCJG/signing", overlap_days=14, now=T0 + DAY)
    init_pki(fresh_pki.root, parties=PARTIES, force=True, now=T0 + 2 * DAY)
    assert (files.directory / "rotation.json").read_text() == "[]\n"
    assert not any((files.directory / "previous").iterdir())  # the old CA's keys are gone too
    bundle = load_certificates(files.directory / "accepted-signing.pem")
    assert [fingerprint(c) for c in bundle] == [fingerprint(load_certificate(files.signing_cert))]


def test_a_seal_built_from_a_bundle_honours_the_end_of_the_overlap(fresh_pki):
    """The bundle is written at rotation and still lists the old certificate weeks later; the
    rotation record beside it says when the overlap ended, as from_pki would read it."""
    files = fresh_pki.party("SCJG")
    old = _signed_by(files.signing_cert, files.signing_key)
    rotated_at = T0 + DAY
    rotate(fresh_pki.root, "SCJG/signing", overlap_days=7, now=rotated_at)
    assert load_certificates(files.directory / "accepted-signing.pem").__len__() == 2

    _seal_from_bundle(fresh_pki, rotated_at + 6 * DAY).verify_manifest(*old)
    with pytest.raises(RefusedInput, match="no longer"):
        _seal_from_bundle(fresh_pki, rotated_at + 8 * DAY).verify_manifest(*old)


# --- reports after a rotation ------------------------------------------------------------------
def _runtime(tmp_path, pki) -> HubRuntime:
    return HubRuntime(Settings(data_dir=tmp_path / "hub", database_url=None, broker_url=None, pki_dir=pki.root))


def test_rotated_out_certificates_are_informational(tmp_path, caplog):
    """The operator rotates SCJG in answer to a CRITICAL warning: SCJG must stop being CRITICAL."""
    fresh_pki = init_pki(tmp_path / "pki", parties=PARTIES[:1], now=T0)
    not_after = load_certificate(fresh_pki.party("SCJG").signing_cert).not_valid_after_utc
    rotated_at = not_after - 5 * DAY
    rotate(fresh_pki.root, "SCJG", overlap_days=14, now=rotated_at)
    rotate(fresh_pki.root, "hub", overlap_days=14, now=rotated_at)
    after = rotated_at + DAY
    statuses = cert_status(fresh_pki.root, now=after)

    previous = {s.name: s for s in statuses if s.name.endswith(".previous")}
    assert len(previous) == 6 and {s.level for s in previous.values()} == {Level.RETIRED}
    assert {s.accepted_until for s in previous.values()} == {not_after}  # the overlap ends with the old cert
    in_use = [s for s in statuses if s.name not in previous and s.name != "ca"]
    assert worst_level(statuses) is Level.OK and {s.level for s in in_use} == {Level.OK}

    assert _certificates(fresh_pki.root, after)["SCJG"].name == "SCJG/server"  # not a .previous one
    assert _certificates(fresh_pki.root, after)["SCJG"].level == "ok"
    with caplog.at_level(logging.WARNING, logger="hub"):
        result = check_certificates_job(_runtime(tmp_path, fresh_pki), now=after)
    assert result["attention"] == [] and not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- one unreadable file ---------------------------------------------------------------------------
def test_one_unreadable_certificate_does_not_hide_the_others(fresh_pki, tmp_path, caplog):
    swj = fresh_pki.party("SWJ")
    der = load_certificate(swj.server_cert).public_bytes(serialization.Encoding.DER)
    swj.server_cert.write_bytes(der)  # a DER file where PEM belongs
    expired = load_certificate(fresh_pki.hub.signing_cert).not_valid_after_utc + DAY  # and everything expired

    statuses = {s.name: s for s in cert_status(fresh_pki.root, now=expired)}
    assert statuses["SWJ/server"].level is Level.UNREADABLE and "cannot read" in statuses["SWJ/server"].error
    assert statuses["hub/signing"].level is Level.EXPIRED and statuses["SWJ/client"].level is Level.EXPIRED

    shown = _certificates(fresh_pki.root, expired)
    assert shown["SWJ"].name == "SWJ/server" and shown["SWJ"].level == "unreadable"
    assert shown["SCJG"].level == shown["hub"].level == "expired"

    with caplog.at_level(logging.WARNING, logger="hub"):
        result = check_certificates_job(_runtime(tmp_path, fresh_pki), now=expired)
    attention = {a["name"]: a["level"] for a in result["attention"]}
    assert attention["SWJ/server"] == "unreadable" and attention["hub/signing"] == "expired"
    assert any(r.levelno >= logging.ERROR and "SWJ/server" in r.getMessage() for r in caplog.records)


# --- durable writes -----------------------------------------------------------------------------------
@pytest.fixture
def fsynced(monkeypatch) -> list[str]:
    """What was flushed to disk, by path (the OS call is the seam; Linux names an fd in /proc)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to name file descriptors")
    paths: list[str] = []
    real = os.fsync

    def recording(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return paths


def test_keys_and_the_rotation_record_reach_the_disk_before_they_replace_the_old_ones(fresh_pki, fsynced):
    party_dir = fresh_pki.party("SCJG").directory
    rotate(fresh_pki.root, "SCJG/signing", now=T0 + DAY)
    names = [Path(p).name for p in fsynced]
    assert any(n.startswith(".signing.key.") and n.endswith(".tmp") for n in names)  # the data, before the rename
    assert any(n.startswith(".rotation.json.") and n.endswith(".tmp") for n in names)
    assert str(party_dir) in fsynced  # and the rename itself
    assert not [p for p in party_dir.iterdir() if p.name.endswith(".tmp")]
