"""WS-Security as the simulated 地税局 demands it: the agency's own checks, not the hub's code.

A request must carry a wsse:Security header with a fresh wsu:Timestamp, a UsernameToken with
a PasswordDigest (and a nonce never seen before), and an X.509 signature over soap:Body and
the Timestamp with SHA-256 made by the key of the HUB's certificate, the one the agency
holds on file. Every response, faults included, is signed with the AGENCY's key.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import threading
from dataclasses import dataclass, field
from pathlib import Path

import xmlsec
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from lxml import etree

__all__ = ["AgencyWsse", "agency_wsse_from_pki"]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DS = "http://www.w3.org/2000/09/xmldsig#"
_NS = {"soap": SOAP_ENV, "wsse": WSSE, "wsu": WSU, "ds": DS}
_ID = f"{{{WSU}}}Id"
_SHA256_SIGNATURES = {"http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
                      "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"}  # fmt: skip
_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
_DIGEST_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
_SKEW = dt.timedelta(minutes=5)


def _time(text: str | None) -> dt.datetime:
    value = dt.datetime.fromisoformat((text or "").strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _is_ec(key_pem: bytes) -> bool:
    return isinstance(load_pem_private_key(key_pem, password=None), ec.EllipticCurvePrivateKey)


@dataclass
class AgencyWsse:
    """The agency's WS-Security policy (fits ``sandbox.soap_agencies.SoapSecurity``)."""

    hub_cert_pem: bytes  # whose signatures the agency accepts
    agency_key_pem: bytes  # what it signs its responses with
    agency_cert_pem: bytes
    username: str | None = None
    password: str | None = None
    _nonces: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- requests in -----------------------------------------------------------------------
    def verify_request(self, envelope: etree._Element) -> None:
        """Raise ValueError with the reason the request's security header is refused."""
        security = envelope.find("soap:Header/wsse:Security", _NS)
        if security is None:
            raise ValueError("wsse:Security header is required")
        now = dt.datetime.now(dt.UTC)
        try:
            if self.username is not None:
                self._check_token(security, now)
            self._check_signature(envelope, security, now)
        except (AttributeError, TypeError, binascii.Error) as exc:  # a header missing its parts
            raise ValueError(f"malformed wsse:Security header ({type(exc).__name__})") from exc

    def _check_token(self, security: etree._Element, now: dt.datetime) -> None:
        token = security.find("wsse:UsernameToken", _NS)
        if token is None or token.findtext("wsse:Username", None, _NS) != self.username:
            raise ValueError("unknown or missing UsernameToken")
        password = token.find("wsse:Password", _NS)
        nonce, created = token.findtext("wsse:Nonce", None, _NS), token.findtext("wsu:Created", None, _NS)
        if password is None or password.get("Type") != _DIGEST_TYPE or not nonce or not created:
            raise ValueError("UsernameToken must carry a PasswordDigest, a Nonce and Created")
        expected = base64.b64encode(hashlib.sha1(  # noqa: S324 - SHA-1 is what the token profile defines
            base64.b64decode(nonce) + created.encode() + (self.password or "").encode()).digest()).decode()
        if not hmac.compare_digest(expected, (password.text or "").strip()):
            raise ValueError("UsernameToken password is wrong")
        if abs(_time(created) - now) > _SKEW:
            raise ValueError("UsernameToken is not fresh")
        with self._lock:
            if nonce in self._nonces:
                raise ValueError("UsernameToken nonce replayed")
            self._nonces.add(nonce)

    def _check_signature(self, envelope: etree._Element, security: etree._Element, now: dt.datetime) -> None:
        signature, timestamp = security.find("ds:Signature", _NS), security.find("wsu:Timestamp", _NS)
        body = envelope.find("soap:Body", _NS)
        if signature is None or timestamp is None or body is None:
            raise ValueError("a signature and a wsu:Timestamp are required")
        if signature.find("ds:SignedInfo/ds:SignatureMethod", _NS).get("Algorithm") not in _SHA256_SIGNATURES:
            raise ValueError("signature must use SHA-256")
        refs = signature.findall("ds:SignedInfo/ds:Reference", _NS)
        if any(r.find("ds:DigestMethod", _NS).get("Algorithm") != _SHA256 for r in refs):
            raise ValueError("digests must use SHA-256")
        uris = {r.get("URI") for r in refs}
        if f"#{body.get(_ID)}" not in uris or f"#{timestamp.get(_ID)}" not in uris:
            raise ValueError("signature must cover soap:Body and wsu:Timestamp")
        ctx = xmlsec.SignatureContext()
        for uri in uris:
            targets = envelope.xpath("//*[@wsu:Id=$id]", namespaces=_NS, id=(uri or "").removeprefix("#"))
            if len(targets) != 1:
                raise ValueError("each signed reference must name exactly one element")
            ctx.register_id(targets[0], "Id", WSU)
        ctx.key = xmlsec.Key.from_memory(self.hub_cert_pem, xmlsec.KeyFormat.CERT_PEM, None)
        try:
            ctx.verify(signature)
        except xmlsec.Error as exc:
            raise ValueError("signature does not verify with the hub's certificate") from exc
        if _time(timestamp.findtext("wsu:Created", None, _NS)) > now + _SKEW or _time(
                timestamp.findtext("wsu:Expires", None, _NS)) < now - _SKEW:  # fmt: skip
            raise ValueError("wsu:Timestamp is not current")

    # --- responses out ---------------------------------------------------------------------
    def sign_response(self, envelope: etree._Element) -> None:
        """Add a Timestamp and sign it and the Body with the agency's key (cert as X509Data)."""
        header = envelope.find("soap:Header", _NS)
        security = etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        timestamp = etree.SubElement(security, f"{{{WSU}}}Timestamp", {_ID: "agency-ts"})
        etree.SubElement(timestamp, f"{{{WSU}}}Created").text = now.isoformat().replace("+00:00", "Z")
        etree.SubElement(timestamp, f"{{{WSU}}}Expires").text = (now + _SKEW).isoformat().replace("+00:00", "Z")
        body = envelope.find("soap:Body", _NS)
        body.set(_ID, "agency-body")
        method = xmlsec.Transform.ECDSA_SHA256 if _is_ec(self.agency_key_pem) else xmlsec.Transform.RSA_SHA256
        signature = xmlsec.template.create(envelope, xmlsec.Transform.EXCL_C14N, method)
        security.insert(0, signature)
        ctx = xmlsec.SignatureContext()
        for target in (body, timestamp):
            ref = xmlsec.template.add_reference(signature, xmlsec.Transform.SHA256, uri="#" + target.get(_ID))
            xmlsec.template.add_transform(ref, xmlsec.Transform.EXCL_C14N)
            ctx.register_id(target, "Id", WSU)
        xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(signature))
        key = xmlsec.Key.from_memory(self.agency_key_pem, xmlsec.KeyFormat.PEM, None)
        key.load_cert_from_memory(self.agency_cert_pem, xmlsec.KeyFormat.CERT_PEM)
        ctx.key = key
        ctx.sign(signature)


def agency_wsse_from_pki(pki_dir: Path, code: str, *, username: str | None = None,
                         password: str | None = None) -> AgencyWsse:  # fmt: skip
    """The agency ``code``'s policy from a dev PKI (certs.pki layout): trusts hub/signing.pem."""
    root = Path(pki_dir)
    return AgencyWsse(
        hub_cert_pem=(root / "hub" / "signing.pem").read_bytes(),
        agency_key_pem=(root / "agencies" / code / "signing.key").read_bytes(),
        agency_cert_pem=(root / "agencies" / code / "signing.pem").read_bytes(),
        username=username,
        password=password,
    )
