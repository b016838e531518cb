"""A development PKI: one CA, the hub's certificates, and three per agency or regulator.

Layout under the PKI directory (names are what agency data files reference in ``[tls]``)::

    ca.pem  ca.key
    hub/server.pem  hub/server.key     TLS server (SAN localhost, 127.0.0.1), EKU serverAuth
    hub/client.pem  hub/client.key     mTLS client, EKU clientAuth
    hub/signing.pem hub/signing.key    WS-Security and drop signatures; drops are encrypted to it
    agencies/<CODE>/{client,server,signing}.{pem,key}   the same three for each party

Every key is P-256, PEM (PKCS#8, unencrypted: this is a development PKI), created with
mode 0600 from the first byte (``os.open(..., 0o600)``), never chmod-ed afterwards and never
logged. ``init_pki`` is idempotent: material that is still valid and issued by the current CA
is kept; anything missing, broken, expired or from another CA is re-issued. File writes are
atomic and durable (certs.pkifiles); the rotation record and bundles are certs.rotation's.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs.pkifiles import (
    _utcnow,
    load_certificate,
    load_certificates,
    load_private_key,
    write_certificate,
    write_private_key,
)
from certs.rotation import refresh_party
from hub.errors import ConfigurationError

__all__ = [
    "CA_VALIDITY_DAYS",
    "HUB",
    "KINDS",
    "LEAF_VALIDITY_DAYS",
    "PartyFiles",
    "PkiLayout",
    "fingerprint",
    "init_pki",
    "issue_leaf",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "write_certificate",
    "write_private_key",
]

HUB = "hub"  # the hub's own party name; agencies and regulators use their codes
KINDS = ("server", "client", "signing")
CA_VALIDITY_DAYS = 3650
LEAF_VALIDITY_DAYS = 397  # the CA/Browser ceiling: short enough that rotation gets exercised
_HUB_ORG = "Shenguan Hub"
_CA_ORG = "Shenguan Hub Development PKI"
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hub and agencies


@dataclass(frozen=True)
class PartyFiles:
    """Where one party's certificates and keys are."""

    name: str
    directory: Path

    def cert(self, kind: str) -> Path:
        return self.directory / f"{kind}.pem"

    def key(self, kind: str) -> Path:
        return self.directory / f"{kind}.key"

    @property
    def client_cert(self) -> Path:
        return self.cert("client")

    @property
    def client_key(self) -> Path:
        return self.key("client")

    @property
    def server_cert(self) -> Path:
        return self.cert("server")

    @property
    def server_key(self) -> Path:
        return self.key("server")

    @property
    def signing_cert(self) -> Path:
        return self.cert("signing")

    @property
    def signing_key(self) -> Path:
        return self.key("signing")


@dataclass(frozen=True)
class PkiLayout:
    """The files of a PKI directory, and what the last ``init_pki`` did to them.

    ``issued`` and ``kept`` name certificates as ``ca``, ``hub/server``, ``SCJG/signing``…
    """

    root: Path
    parties: tuple[str, ...] = ()
    issued: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def hub(self) -> PartyFiles:
        return PartyFiles(HUB, self.root / HUB)

    def party(self, code: str) -> PartyFiles:
        """Files of the hub (``"hub"``) or of an agency/regulator by code."""
        if code == HUB:
            return self.hub
        return PartyFiles(code, self.root / "agencies" / code)

    def resolve(self, reference: str | Path) -> Path:
        """A ``[tls]`` reference from an agency file: absolute path, or a name under the PKI root."""
        path = Path(reference)
        return path if path.is_absolute() else self.root / path

    def existing_parties(self) -> list[str]:
        """The hub and every party that has a directory, hub first."""
        names = [HUB] if (self.root / HUB).is_dir() else []
        agencies = self.root / "agencies"
        if agencies.is_dir():
            names += sorted(p.name for p in agencies.iterdir() if p.is_dir())
        return names


# --- issuance -----------------------------------------------------------------------------


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _subject(org: str, common_name: str, unit: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if unit:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _usage(**flags: bool) -> x509.KeyUsage:
    names = (
        "digital_signature content_commitment key_encipherment data_encipherment key_agreement "
        "key_cert_sign crl_sign encipher_only decipher_only"
    ).split()
    return x509.KeyUsage(**{n: flags.get(n, False) for n in names})


def _make_ca(now: dt.datetime, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _new_key()
    name = _subject(_CA_ORG, "Shenguan Hub Dev CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_leaf(
    kind: str,
    subject: x509.Name,
    *,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime | None = None,
    validity_days: int = LEAF_VALIDITY_DAYS,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Issue a fresh key and certificate of one kind (``server``, ``client`` or ``signing``).

    The signing certificate also allows key agreement: drops are encrypted (ECDH-ES) to it,
    so one certificate per party is all a peer needs to pin, verify and encrypt.
    """
    if kind not in KINDS:
        raise ConfigurationError(f"unknown certificate kind {kind!r}; expected one of {', '.join(KINDS)}")
    now = _utcnow(now)
    key = _new_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + dt.timedelta(days=validity_days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if kind == "server":
        builder = builder.add_extension(_usage(digital_signature=True), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    elif kind == "client":
        builder = builder.add_extension(_usage(digital_signature=True), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    else:
        usage = _usage(digital_signature=True, content_commitment=True, key_agreement=True)
        builder = builder.add_extension(usage, critical=True)
    return builder.sign(ca_key, hashes.SHA256()), key


def _party_subject(party: str, org: str, kind: str) -> x509.Name:
    return _subject(org, "HUB" if party == HUB else party, unit=kind)


# --- init ---------------------------------------------------------------------------------


def _still_good(cert_path: Path, key_path: Path, ca: x509.Certificate | None, now: dt.datetime) -> bool:
    """True when the pair exists, matches, is unexpired and (for leaves) was issued by ``ca``."""
    try:
        cert = load_certificate(cert_path)
        key = load_private_key(key_path)
    except ConfigurationError:
        return False
    if cert.public_key() != key.public_key():
        return False
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        return False
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return False
    return True


def init_pki(
    directory: Path,
    *,
    parties: Iterable[tuple[str, str]] = (),
    validity_days: int = LEAF_VALIDITY_DAYS,
    ca_validity_days: int = CA_VALIDITY_DAYS,
    force: bool = False,
    now: dt.datetime | None = None,
) -> PkiLayout:
    """Create (or complete) a development PKI in ``directory``.

    Args:
        directory: the PKI root (``Settings().resolved_pki_dir``); created with mode 0700.
        parties: ``(code, organisation name)`` of each agency and regulator.
        validity_days: lifetime of leaf certificates (capped at the CA's end).
        ca_validity_days: lifetime of a newly created CA.
        force: re-issue everything, CA included, even when the current material is valid.
        now: the issuing time (tests pass one; default the current UTC time).

    Returns:
        The layout, with ``issued`` and ``kept`` naming what was created and what was left alone.
    """
    now = _utcnow(now)
    layout = PkiLayout(Path(directory))
    layout.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    issued: list[str] = []
    kept: list[str] = []

    if not force and _still_good(layout.ca_cert, layout.ca_key, None, now):
        ca_cert, ca_key = load_certificate(layout.ca_cert), load_private_key(layout.ca_key)
        kept.append("ca")
    else:
        ca_cert, ca_key = _make_ca(now, ca_validity_days)
        write_private_key(layout.ca_key, ca_key)
        write_certificate(layout.ca_cert, ca_cert)
        issued.append("ca")

    wanted: list[tuple[str, str]] = [(HUB, _HUB_ORG)]
    seen = {HUB}
    for code, org in parties:
        if code not in seen:
            seen.add(code)
            wanted.append((code, org or code))

    for party, org in wanted:
        files = layout.party(party)
        for kind in KINDS:
            name = f"{party}/{kind}"
            if not force and _still_good(files.cert(kind), files.key(kind), ca_cert, now):
                kept.append(name)
                continue
            cert, key = issue_leaf(
                kind, _party_subject(party, org, kind), ca_cert=ca_cert, ca_key=ca_key, now=now,
                validity_days=validity_days,
            )
            write_private_key(files.key(kind), key)
            write_certificate(files.cert(kind), cert)
            issued.append(name)
        # A rotated party's bundles must start with the certificate just issued, and must not
        # keep trusting previous ones from a replaced CA or past their overlap.
        refresh_party(files.directory, kinds=KINDS, ca=ca_cert, now=now)

    return PkiLayout(layout.root, tuple(p for p, _ in wanted), tuple(issued), tuple(kept))


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint (hex) — what pins and audit entries name a certificate by."""
    return cert.fingerprint(hashes.SHA256()).hex()
