"""WS-Security for SOAP agencies that demand it (a zeep ``wsse`` plugin).

Outgoing: a fresh wsu:Timestamp, a UsernameToken (PasswordDigest), and an X.509 signature over
soap:Body and the Timestamp with SHA-256 (ECDSA for the dev PKI's P-256 keys, RSA otherwise;
zeep's default would be SHA-1), the certificate sent as a BinarySecurityToken.

Incoming: the agency's signature is checked against the agency's certificate from our own
files, never against the certificate inside the message and never against ours. The
signature must cover soap:Body and the Timestamp, use SHA-256, reference each signed element
exactly once (no signature wrapping), and the Timestamp must be current. Any failure raises
zeep's SignatureVerificationFailed, which adapters.soap translates with the other errors.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xmlsec
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree
from zeep import ns
from zeep.exceptions import SignatureVerificationFailed
from zeep.wsse import utils
from zeep.wsse.signature import BinarySignature, MemorySignature
from zeep.wsse.username import UsernameToken

from hub.errors import ConfigurationError

if TYPE_CHECKING:
    from adapters.soap_config import SoapConfig

__all__ = ["HubWsse", "build_wsse", "verify_signed_envelope"]

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


def verify_signed_envelope(envelope: etree._Element, cert_pem: bytes, *, now: dt.datetime,
                           skew: dt.timedelta = dt.timedelta(minutes=5)) -> None:  # fmt: skip
    """Raise ValueError naming the reason unless ``envelope`` is signed by the key of ``cert_pem``.

    Args:
        envelope: the SOAP envelope as parsed (never re-serialised before checking).
        cert_pem: the certificate the signer must hold (from our files, not from the message).
        now: the current time, for the Timestamp check.
        skew: clock difference tolerated between the two parties.
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
    ctx = xmlsec.SignatureContext()
    for uri in uris:
        targets = envelope.xpath("//*[@wsu:Id=$id]", namespaces=_NS, id=uri.removeprefix("#"))
        if not uri.startswith("#") or len(targets) != 1:
            raise ValueError(f"reference {uri!r} does not name exactly one element")
        try:
            ctx.register_id(targets[0], "Id", ns.WSU)
        except xmlsec.Error as exc:  # e.g. an xml:id equal to the wsu:Id: a wrapping attempt
            raise ValueError(f"reference {uri!r} is ambiguous: {exc}") from exc
    try:
        ctx.key = xmlsec.Key.from_memory(cert_pem, xmlsec.KeyFormat.CERT_PEM, None)
        ctx.verify(signature)
    except xmlsec.Error as exc:
        raise ValueError("signature does not verify with the expected certificate") from exc
    try:
        created, expires = _when(timestamp.findtext("wsu:Created", None, _NS)), _when(
            timestamp.findtext("wsu:Expires", None, _NS))  # fmt: skip
    except ValueError as exc:
        raise ValueError("wsu:Timestamp is unreadable") from exc
    if created > now + skew or expires < now - skew:
        raise ValueError("wsu:Timestamp is not current")


class HubWsse:
    """The hub's side of WS-Security with one agency: sign what we send, verify what it answers."""

    def __init__(self, *, signing_key_pem: bytes | None, signing_cert_pem: bytes | None,
                 agency_cert_pem: bytes | None, username: str | None = None, password: str | None = None,
                 ttl: int = 300, verify_response: bool = True,
                 clock: Callable[[], dt.datetime] = _utcnow) -> None:  # fmt: skip
        self._signature = None
        if signing_key_pem and signing_cert_pem:
            key = load_pem_private_key(signing_key_pem, password=None)
            method = xmlsec.Transform.ECDSA_SHA256 if isinstance(key, ec.EllipticCurvePrivateKey) else (
                xmlsec.Transform.RSA_SHA256)  # fmt: skip
            self._signature = _BinaryMemorySignature(signing_key_pem, signing_cert_pem, None,
                                                     signature_method=method, digest_method=xmlsec.Transform.SHA256)
        self._agency_cert = agency_cert_pem
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
            try:
                verify_signed_envelope(envelope, self._agency_cert or b"", now=self._clock())
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
    agency = _read(cfg.agency_cert, "the agency's signing certificate", cfg.code) if wsse.verify_response else None
    if wsse.username and cfg.password is None:
        raise ConfigurationError(f"agency {cfg.code}: WS-Security UsernameToken needs the credentials reference")
    try:
        return HubWsse(signing_key_pem=key, signing_cert_pem=cert, agency_cert_pem=agency, username=wsse.username,
                       password=cfg.password.get_secret_value() if cfg.password else None,
                       ttl=wsse.timestamp_ttl, verify_response=wsse.verify_response)  # fmt: skip
    except (ValueError, TypeError, xmlsec.Error) as exc:
        raise ConfigurationError(f"agency {cfg.code}: unusable WS-Security key or certificate: {exc}") from exc
