"""The development PKI: usages, names, key files, idempotence, and the `hub certs` commands."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from certs.pki import KINDS, init_pki, load_certificate, load_private_key
from contracts.registry import AGENCIES_DIR
from hub.cli_certs import certs_app

from trust_data import PARTIES, T0


def ext(cert: x509.Certificate, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_ca_may_sign_certificates_and_nothing_else(pki):
    ca = load_certificate(pki.ca_cert)
    constraints = ext(ca, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert ext(ca, x509.AuthorityKeyIdentifier).value.key_identifier == ext(ca, x509.SubjectKeyIdentifier).value.digest


@pytest.mark.parametrize("party", ["hub", "SCJG", "REG"])
def test_each_party_has_server_client_and_signing_certificates_with_proper_usages(pki, party):
    files = pki.party(party)
    ca = load_certificate(pki.ca_cert)
    ca_ski = ext(ca, x509.SubjectKeyIdentifier).value.digest

    server = load_certificate(files.server_cert)
    assert ext(server, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    sans = ext(server, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]

    client = load_certificate(files.client_cert)
    assert ext(client, x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])

    signing = load_certificate(files.signing_cert)
    usage = ext(signing, x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment and usage.key_agreement
    assert not usage.key_cert_sign

    for kind, cert in (("server", server), ("client", client), ("signing", signing)):
        assert not ext(cert, x509.BasicConstraints).value.ca
        assert ext(cert, x509.KeyUsage).critical
        cert.verify_directly_issued_by(ca)
        assert ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
        assert ext(cert, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
            cert.public_key()
        )
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert cert.public_key().curve.name == "secp256r1"
        assert cert.public_key() == load_private_key(files.key(kind)).public_key()
        names = {a.oid: a.value for a in cert.subject}
        assert names[NameOID.COMMON_NAME] == ("HUB" if party == "hub" else party)
        assert names[NameOID.ORGANIZATIONAL_UNIT_NAME] == kind


def test_agency_subject_carries_its_organisation_name(pki):
    cert = load_certificate(pki.party("SCJG").client_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "天津市南开区市场监督管理局"


def test_private_keys_are_0600_even_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        layout = init_pki(tmp_path / "pki", parties=PARTIES[:1])
    finally:
        os.umask(old)
    keys = sorted(layout.root.rglob("*.key"))
    assert len(keys) == 1 + 2 * len(KINDS)
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(layout.ca_cert.stat().st_mode) == 0o644


def test_second_init_keeps_valid_material_untouched(fresh_pki):
    before = {p: p.read_bytes() for p in fresh_pki.root.rglob("*") if p.is_file()}
    again = init_pki(fresh_pki.root, parties=PARTIES, now=T0)
    assert again.issued == ()
    assert {p: p.read_bytes() for p in fresh_pki.root.rglob("*") if p.is_file()} == before


def test_init_replaces_only_what_is_missing_or_broken_and_adds_new_parties(fresh_pki):
    fresh_pki.party("SCJG").client_key.unlink()
    fresh_pki.party("SWJ").server_cert.write_text("not a certificate")
    again = init_pki(fresh_pki.root, parties=[*PARTIES, ("NEW", "新机构")], now=T0)
    assert set(again.issued) == {"SCJG/client", "SWJ/server", "NEW/server", "NEW/client", "NEW/signing"}


def test_init_reissues_leaves_when_the_ca_changes(fresh_pki):
    shutil.rmtree(fresh_pki.root / "hub")
    fresh_pki.ca_key.unlink()
    again = init_pki(fresh_pki.root, parties=PARTIES, now=T0)
    assert len(again.issued) == 1 + 3 * (1 + len(PARTIES)) and again.kept == ()


def test_force_reissues_everything(fresh_pki):
    again = init_pki(fresh_pki.root, parties=PARTIES, now=T0, force=True)
    assert again.kept == () and "ca" in again.issued


# --- the command line ----------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    agencies = tmp_path / "agencies"
    agencies.mkdir()
    shutil.copy(AGENCIES_DIR / "scjg.toml", agencies / "scjg.toml")
    monkeypatch.setenv("HUB_AGENCIES_DIR", str(agencies))
    monkeypatch.setenv("HUB_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("HUB_PKI_DIR", raising=False)
    return tmp_path


def test_cli_init_covers_registry_agencies_and_extra_parties_and_never_prints_keys(cli_env):
    result = CliRunner().invoke(certs_app, ["init", "--party", "REG:区监管专班"])
    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.output
    root = cli_env / "var" / "pki"
    for code in ("SCJG", "REG"):
        assert (root / "agencies" / code / "signing.key").exists()
    status = CliRunner().invoke(certs_app, ["status", "--json"])
    assert status.exit_code == 0, status.output
    rows = json.loads(status.stdout)
    assert {r["name"] for r in rows} >= {"ca", "hub/server", "SCJG/client", "REG/signing"}
    assert {r["level"] for r in rows} == {"ok"}


def test_cli_status_exits_non_zero_and_warns_when_a_certificate_expired(cli_env):
    import datetime as dt

    init_pki(cli_env / "var" / "pki", parties=[("SCJG", "x")], now=dt.datetime.now(dt.UTC) - dt.timedelta(days=40),
             validity_days=30)  # fmt: skip
    result = CliRunner().invoke(certs_app, ["status"])
    assert result.exit_code == 1
    assert "EXPIRED: SCJG/signing" in result.output


def test_cli_rotate_then_status_shows_the_previous_certificate_still_accepted(cli_env):
    CliRunner().invoke(certs_app, ["init"])
    result = CliRunner().invoke(certs_app, ["rotate", "SCJG/signing", "--overlap-days", "3"])
    assert result.exit_code == 0, result.output
    status = CliRunner().invoke(certs_app, ["status"])
    assert "SCJG/signing.previous" in status.output


def test_cli_reports_a_missing_pki_clearly(cli_env):
    result = CliRunner().invoke(certs_app, ["status"])
    assert result.exit_code == 1
    assert "hub certs init" in result.output
