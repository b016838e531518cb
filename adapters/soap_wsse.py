"""WS-Security for SOAP agencies that demand it (a zeep ``wsse`` plugin).

Outgoing: a fresh wsu:Timestamp, a UsernameToken (PasswordDigest), and an X.509 signature over
soap:Body and the Timestamp with SHA-256 (ECDSA for the dev PKI's P-256 keys, RSA otherwise;
zeep's default would be SHA-1), the certificate sent as a BinarySecurityToken.

Incoming: the agency's signature is checked against the agency's certificates from our own
files, never against the certificate inside the message and never against ours. The file may
be a bundle, and in a PKI party directory the rotation record adds the agency's previous
certificate until its overlap ends (certs.rotation.accepted_in_file): any of them that is
valid now may have signed. The signature must cover soap:Body and the Timestamp, use SHA-256,
reference each signed element exactly once (no signature wrapping), and the Timestamp must be
current. A bad message raises zeep's SignatureVerificationFailed; no currently valid agency
certificate on file raises :class:`AgencyCertificateUnusable` (our files need replacing, the
message may be fine). adapters.soap translates both with the other errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree
from zeep import ns
from zeep.exceptions import SignatureVerificationFailed
from zeep.wsse import utils
from zeep.wsse.signature import BinarySignature, MemorySignature
from zeep.wsse.username import UsernameToken

from adapters.soap_config import AgencyCertificateUnusable
from certs.rotation import accepted_in_file
from hub.errors import ConfigurationError

if TYPE_CHECKING:
    from adapters.soap_config import SoapConfig

__all__ = ["AgencyCertificateUnusable", "HubWsse", "build_wsse", "verify_signed_envelope"]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SHA256_SIGNATURES = {
    "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
    "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
}
SHA256_DIGEST = "http://www.w3.org/2001/04/xmlenc#sha256"
_ID = f"{{{ns.WSU}}}Id"
_NS = {"ds": ns.DS, "wsse": ns.WSSE, "wsu": ns.WSU, "soap": SOAP_ENV}


class _BinaryMemorySignature(MemorySignature):
    """zeep's BinarySignature (certificate as a BinarySecurityToken) from PEM bytes, not files."""

    apply = BinarySignature.apply


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _when(text: str | None) -> dt.datetime:
    value = dt.datetime.fromisoformat((text or "").strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _certificates(accepted: bytes | Sequence[x509.Certificate]) -> list[x509.Certificate]:
    if not isinstance(accepted, bytes):
        return list(accepted)
    try:
        return x509.load_pem_x509_certificates(accepted)
    except ValueError as exc:
        raise AgencyCertificateUnusable("the agency certificate on file is not a PEM certificate") from exc


def _valid_now(certs: list[x509.Certificate], now: dt.datetime) -> list[x509.Certificate]:
    valid = [c for c in certs if c.not_valid_before_utc <= now < c.not_valid_after_utc]
    if not valid:
        ends = ", ".join(f"serial {c.serial_number:x} valid {c.not_valid_before_utc:%Y-%m-%d %H:%M}Z to "
                         f"{c.not_valid_after_utc:%Y-%m-%d %H:%M}Z" for c in certs) or "none on file"  # fmt: skip
        raise AgencyCertificateUnusable(f"no agency certificate on file is valid now ({ends})")
    return valid


def verify_signed_envelope(
    envelope: etree._Element,
    accepted: bytes | Sequence[x509.Certificate],
    *,
    now: dt.datetime,
    skew: dt.timedelta = dt.timedelta(minutes=5),
) -> x509.Certificate:
    """Raise ValueError naming the reason unless ``envelope`` is signed by the key of an accepted certificate.

    Args:
        envelope: the SOAP envelope as parsed (never re-serialised before checking).
        accepted: the certificates the signer may hold (from our files, not from the message): PEM
            bytes of one or more, or the certificates; only those valid at ``now`` count.
        now: the current time, for the certificates' validity and the Timestamp check.
        skew: clock difference tolerated between the two parties (Timestamp only).

    Returns:
        The certificate whose key made the signature.

    Raises:
        ValueError: the message is unsigned, malformed, wrapped, stale, or signed by another key.
        AgencyCertificateUnusable: no accepted certificate is valid at ``now``.
    """
    security = envelope.find("soap:Header/wsse:Security", _NS)
    body = envelope.find("soap:Body", _NS)
    if security is None or body is None:
        raise ValueError("no wsse:Security header")
    signature = security.find("ds:Signature", _NS)
    timestamp = security.find("wsu:Timestamp", _NS)
    if signature is None:
        raise ValueError("message is not signed")
    if timestamp is None:
        raise ValueError("no wsu:Timestamp")
    method = signature.find("ds:SignedInfo/ds:SignatureMethod", _NS)
    if method is None or method.get("Algorithm") not in SHA256_SIGNATURES:
        raise ValueError("signature method is not SHA-256")
    references = signature.findall("ds:SignedInfo/ds:Reference", _NS)
    if any(r.find("ds:DigestMethod", _NS) is None or r.find("ds:DigestMethod", _NS).get("Algorithm") != SHA256_DIGEST
           for r in references):  # fmt: skip
        raise ValueError("digest method is not SHA-256")
    uris = [r.get("URI") or "" for r in references]
    for element, what in ((body, "soap:Body"), (timestamp, "wsu:Timestamp")):
        if not element.get(_ID) or f"#{element.get(_ID)}" not in uris:
            raise ValueError(f"signature does not cover {what}")
    targets = []
    for uri in uris:
        found = envelope.xpath("//*[@wsu:Id=$id]", namespaces=_NS, id=uri.removeprefix("#"))
        if not uri.startswith("#") or len(found) != 1:
            raise ValueError(f"reference {uri!r} does not name exactly one element")
        targets.append((uri, found[0]))
    signer = None
    for cert in _valid_now(_certificates(accepted), now):
        ctx = xmlsec.SignatureContext()  # one per key: a failed verification leaves a context unusable
        for uri, target in targets:
            try:
                ctx.register_id(target, "Id", ns.WSU)
            except xmlsec.Error as exc:  # e.g. an xml:id equal to the wsu:Id: a wrapping attempt
                raise ValueError(f"reference {uri!r} is ambiguous: {exc}") from exc
        try:
            ctx.key = xmlsec.Key.from_memory(cert.public_bytes(serialization.Encoding.PEM), xmlsec.KeyFormat.CERT_PEM,
                                             None)  # fmt: skip
            ctx.verify(signature)
        except xmlsec.Error:
            continue
        signer = cert
        break
    if signer is None:
        raise ValueError("signature does not verify with the expected certificate")
    try:
        created, expires = _when(timestamp.findtext("wsu:Created", None, _NS)), _when(
            timestamp.findtext("wsu:Expires", None, _NS))  # fmt: skip
    except ValueError as exc:
        raise ValueError("wsu:Timestamp is unreadable") from exc
    if created > now + skew or expires < now - skew:
        raise ValueError("wsu:Timestamp is not current")
    return signer


class HubWsse:
    """The hub's side of WS-Security with one agency: sign what we send, verify what it answers."""

    def __init__(self, *, signing_key_pem: bytes | None, signing_cert_pem: bytes | None,
                 agency_cert_pem: bytes | None = None, username: str | None = None, password: str | None = None,
                 ttl: int = 300, verify_response: bool = True, clock: Callable[[], dt.datetime] = _utcnow,
                 agency_certs: Callable[[dt.datetime], Sequence[x509.Certificate]] | None = None) -> None:  # fmt: skip
        """``agency_certs`` (the agency's certificates accepted at a time) takes precedence over
        ``agency_cert_pem`` (a fixed PEM certificate or bundle)."""
        self._signature = None
        if signing_key_pem and signing_cert_pem:
            key = load_pem_private_key(signing_key_pem, password=None)
            method = xmlsec.Transform.ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else (
                xmlsec.Transform.RSA_SHA256)  # fmt: skip
            self._signature = _BinaryMemorySignature(signing_key_pem, signing_cert_pem, None,
                                                     signature_method=method, digest_method=xmlsec.Transform.SHA256)
        self._agency_cert = agency_cert_pem
        self._agency_certs = agency_certs
        self._username, self._password = username, password
        self._ttl, self._verify, self._clock = dt.timedelta(seconds=ttl), verify_response, clock

    def apply(self, envelope: etree._Element, headers: dict[str, Any]) -> tuple[etree._Element, dict[str, Any]]:
        now = self._clock().replace(microsecond=0)
        security = utils.get_security_header(envelope)
        security.append(utils.WSU.Timestamp(
            utils.WSU.Created(now.isoformat().replace("+00:00", "Z")),
            utils.WSU.Expires((now + self._ttl).isoformat().replace("+00:00", "Z"))))  # fmt: skip
        if self._username:
            UsernameToken(self._username, self._password, use_digest=True, zulu_timestamp=True).apply(
                envelope, headers)  # fmt: skip
        if self._signature is not None:
            self._signature.apply(envelope, headers)
        return envelope, headers

    def verify(self, envelope: etree._Element) -> etree._Element:
        if self._verify:
            now = self._clock()
            accepted = self._agency_certs(now) if self._agency_certs else self._agency_cert or b""
            try:
                verify_signed_envelope(envelope, accepted, now=now)
            except ValueError as exc:
                raise SignatureVerificationFailed(f"WS-Security: {exc}") from exc
        return envelope


def _read(path: Path | None, what: str, code: str) -> bytes:
    if path is None:
        raise ConfigurationError(f"agency {code}: WS-Security needs {what}, and none is configured")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"agency {code}: cannot read {what} {path}: {exc.strerror}") from exc


def build_wsse(cfg: SoapConfig) -> HubWsse:
    """The plugin for ``cfg.wsse``, keys and certificates read from the configured files."""
    wsse = cfg.wsse
    assert wsse is not None
    key = _read(cfg.signing_key, "the hub's signing key", cfg.code) if wsse.sign else None
    cert = _read(cfg.signing_cert, "the hub's signing certificate", cfg.code) if wsse.sign else None
    agency = _agency_certificates(cfg) if wsse.verify_response else None
    if wsse.username and cfg.password is None:
        raise ConfigurationError(f"agency {cfg.code}: WS-Security UsernameToken needs the credentials reference")
    try:
        return HubWsse(signing_key_pem=key, signing_cert_pem=cert, agency_certs=agency, username=wsse.username,
                       password=cfg.password.get_secret_value() if cfg.password else None,
                       ttl=wsse.timestamp_ttl, verify_response=wsse.verify_response)  # fmt: skip
    except (ValueError, TypeError, xmlsec.Error) as exc:
        # the class only: a parser's message may quote what it could not parse, here a private key
        raise ConfigurationError(f"agency {cfg.code}: unusable WS-Security key or certificate "
                                 f"({type(exc).__name__})") from exc


def _agency_certificates(cfg: SoapConfig) -> Callable[[dt.datetime], list[x509.Certificate]]:
    """The agency's certificates accepted at a time: each until its overlap ends (validity is
    checked by verify_signed_envelope, which names an expired certificate as such)."""
    if cfg.agency_cert is None:
        raise ConfigurationError(f"agency {cfg.code}: WS-Security needs the agency's signing certificate, "
                                 "and none is configured")  # fmt: skip
    try:
        entries = accepted_in_file(Path(cfg.agency_cert))
    except ConfigurationError as exc:
        raise ConfigurationError(f"agency {cfg.code}: the agency's signing certificate: {exc}") from exc

    def accepted(at: dt.datetime) -> list[x509.Certificate]:
        return [cert for cert, until in entries if until is None or at < until]

    return accepted
