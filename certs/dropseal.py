"""Signed and encrypted file drops in JOSE, checkable by any other JOSE implementation.

- The manifest is a JWS, compact serialization, ES256, with the signer's certificate in
  ``x5c`` (standard base64 DER, RFC 7515 §4.1.6) and its SHA-256 thumbprint in ``x5t#S256``.
  The verifier trusts only its own CA (never a CA carried in the token), checks the
  signer's validity period, identity and, when given, the accepted (pinned) certificates.
- Each data file is a JWE, compact serialization, ``ECDH-ES+A256KW`` / ``A256GCM``,
  encrypted to the recipient's signing certificate (which allows key agreement).

Every refusal is a :class:`hub.errors.RefusedInput` whose ``reason`` is a :class:`Reason`.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry
from joserfc.jwk import ECKey
from joserfc.jws import JWSRegistry

from certs.pki import _utcnow
from hub.evidence_verify import may_sign_documents
from hub.errors import ConfigurationError, RefusedInput

__all__ = [
    "MAX_FILE_BYTES",
    "MANIFEST_TYPE",
    "MAX_MANIFEST_BYTES",
    "RECEIPT_TYPE",
    "Reason",
    "VerifiedManifest",
    "decrypt_file",
    "encrypt_file",
    "open_manifest",
    "seal_manifest",
    "signer_code",
    "verify_digest",
    "verify_manifest",
]

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
SIGN_ALG = "ES256"
MANIFEST_TYPE = "json"  # what manifests have always carried; a token without cty is a manifest too
RECEIPT_TYPE = "receipt+json"
KEY_ALG = "ECDH-ES+A256KW"
ENC_ALG = "A256GCM"


class Reason(enum.StrEnum):
    """Why a drop was refused (goes to failed/ with the file)."""

    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_SIGNER = "unknown_signer"
    EXPIRED_CERTIFICATE = "expired_certificate"  # or not yet valid
    MALFORMED = "malformed_token"
    UNDECRYPTABLE = "undecryptable"
    DIGEST_MISMATCH = "digest_mismatch"


def _refuse(reason: Reason, detail: str) -> RefusedInput:
    return RefusedInput(f"{reason.value}: {detail}", reason=reason.value)


# joserfc's default limits (512-byte JWS header, 64 KiB JWE ciphertext) guard against
# abuse but are too small for an x5c header or a day's data file; ours are explicit and finite.
# joserfc measures the base64url text, not the bytes: the receiver's limits are the sender's.
def _b64_length(size: int) -> int:
    return -(-size // 3) * 4


class _JWSRegistry(JWSRegistry):
    max_header_length = 16 * 1024
    max_payload_length = _b64_length(MAX_MANIFEST_BYTES)


class _JWERegistry(JWERegistry):
    max_ciphertext_length = _b64_length(MAX_FILE_BYTES + 16)


_JWS = _JWSRegistry(algorithms=[SIGN_ALG])
_JWE = _JWERegistry(algorithms=[KEY_ALG, ENC_ALG])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _token_text(token: str | bytes) -> str:
    """A compact token as text without surrounding white space (files end in a newline).

    Bytes that are not ASCII become U+FFFD, so a garbled token is refused as malformed
    rather than raising a decoding error.
    """
    return (token.decode("ascii", "replace") if isinstance(token, bytes) else token).strip()


def _thumbprint(cert: x509.Certificate) -> str:
    return _b64url(cert.fingerprint(hashes.SHA256()))


def signer_code(cert: x509.Certificate) -> str:
    """The party code a certificate speaks for: its subject CN (``SCJG``, ``HUB``)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


# --- signing ------------------------------------------------------------------------------


def _canonical(manifest: bytes | Mapping[str, Any]) -> bytes:
    if isinstance(manifest, Mapping):
        return json.dumps(manifest, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if not isinstance(json.loads(manifest), dict):
        raise ValueError("a drop manifest must be a JSON object")
    return bytes(manifest)


def seal_manifest(
    manifest: bytes | Mapping[str, Any],
    *,
    signing_cert: x509.Certificate,
    signing_key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate] = (),
    content_type: str = MANIFEST_TYPE,
) -> str:
    """Sign a manifest (a JSON object, or its bytes as they are) as a compact ES256 JWS.

    Args:
        manifest: a mapping (serialized as canonical JSON) or the exact JSON bytes to sign.
        signing_cert: the signer's certificate, sent in ``x5c``; its key must be ``signing_key``.
        signing_key: the P-256 private key.
        chain: intermediate certificates to append to ``x5c`` (never needed by our verifier).
        content_type: ``cty``: RECEIPT_TYPE signs a licence batch's receipt instead, so that
            neither kind of signature can be passed off as the other.
    """
    if signing_cert.public_key() != signing_key.public_key():
        raise ConfigurationError("signing certificate and signing key do not belong together")
    header = {
        "alg": SIGN_ALG,
        "typ": "JOSE",
        "cty": content_type,
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
                for c in (signing_cert, *chain)],
        "x5t#S256": _thumbprint(signing_cert),
    }  # fmt: skip
    return jws.serialize_compact(header, _canonical(manifest), ECKey.import_key(signing_key), registry=_JWS)


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest whose signature checked out, with who signed it (for the audit log)."""

    manifest: dict[str, Any]
    payload: bytes  # the signed bytes, exactly
    signer: x509.Certificate
    token: str


def _parse(text: str) -> tuple[dict[str, Any], bytes, x509.Certificate]:
    """Header, payload and the x5c leaf of a compact JWS, without trusting anything yet."""
    if len(text) > 2 * MAX_MANIFEST_BYTES:
        raise _refuse(Reason.MALFORMED, "manifest token is too large")
    parts = text.split(".")
    if len(parts) != 3:
        raise _refuse(Reason.MALFORMED, f"a compact JWS has 3 parts, this has {len(parts)}")
    try:
        header = json.loads(_unb64url(parts[0]))
        payload = _unb64url(parts[1])
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(Reason.MALFORMED, "manifest header or payload is not base64url JSON") from exc
    if not isinstance(header, dict):
        raise _refuse(Reason.MALFORMED, "manifest header is not a JSON object")
    if header.get("alg") != SIGN_ALG:
        raise _refuse(Reason.MALFORMED, f"manifest algorithm {header.get('alg')!r} is not {SIGN_ALG}")
    if header.get("crit"):
        raise _refuse(Reason.MALFORMED, f"unsupported critical header parameters {header['crit']!r}")
    chain = header.get("x5c")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], str):
        raise _refuse(Reason.UNKNOWN_SIGNER, "manifest names no signer certificate (x5c)")
    try:
        signer = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except ValueError as exc:
        raise _refuse(Reason.MALFORMED, "signer certificate in x5c is not DER") from exc
    return header, payload, signer


# One rule for the hub and the offline evidence verifier, defined there (that file imports nothing of ours).
_may_sign_documents = may_sign_documents


def _check_signer(
    signer: x509.Certificate,
    trusted_ca: Sequence[x509.Certificate],
    expected_signer: str | None,
    accepted: Sequence[x509.Certificate] | None,
    now: dt.datetime,
) -> None:
    issuer = None
    for ca in trusted_ca:
        try:
            signer.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        issuer = ca
        break
    who = f"{signer.subject.rfc4514_string()} (serial {signer.serial_number:x})"
    if issuer is None:
        raise _refuse(Reason.UNKNOWN_SIGNER, f"{who} was not issued by a trusted CA")
    for cert, role in ((signer, "signer"), (issuer, "issuing CA")):
        if now < cert.not_valid_before_utc:
            raise _refuse(Reason.EXPIRED_CERTIFICATE, f"{role} certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
        if now >= cert.not_valid_after_utc:
            raise _refuse(Reason.EXPIRED_CERTIFICATE, f"{role} certificate expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    if not _may_sign_documents(signer):
        raise _refuse(Reason.UNKNOWN_SIGNER, f"{who} is not a signing certificate")
    if expected_signer is not None and signer_code(signer) != expected_signer:
        raise _refuse(Reason.UNKNOWN_SIGNER, f"signed by {signer_code(signer)!r}, expected {expected_signer!r}")
    if accepted is not None:
        mine = signer.fingerprint(hashes.SHA256())
        if not any(hmac.compare_digest(mine, c.fingerprint(hashes.SHA256())) for c in accepted):
            raise _refuse(Reason.UNKNOWN_SIGNER, f"{who} is not (or no longer) an accepted certificate")


def open_manifest(
    token: str | bytes,
    *,
    trusted_ca: x509.Certificate | Sequence[x509.Certificate],
    expected_signer: str | None = None,
    accepted: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
    content_type: str = MANIFEST_TYPE,
) -> VerifiedManifest:
    """Verify a manifest JWS and return it with its signer. See :func:`verify_manifest`.

    ``content_type=RECEIPT_TYPE`` verifies a receipt's signature instead: a manifest's is refused
    there, and a receipt's is refused as a manifest's.
    """
    cas = [trusted_ca] if isinstance(trusted_ca, x509.Certificate) else list(trusted_ca)
    text = _token_text(token)
    header, payload, signer = _parse(text)
    if (header.get("cty") == RECEIPT_TYPE) != (content_type == RECEIPT_TYPE):
        signed, wanted = (("a receipt", "a manifest") if content_type != RECEIPT_TYPE
                          else ("a manifest", "a receipt"))  # fmt: skip
        raise _refuse(Reason.MALFORMED, f"the token signs {signed} (cty {header.get('cty')!r}), not {wanted}")
    _check_signer(signer, cas, expected_signer, accepted, _utcnow(now))
    public = signer.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise _refuse(Reason.UNKNOWN_SIGNER, "signer key is not P-256")
    try:
        jws.deserialize_compact(text, ECKey.import_key(public), registry=_JWS)
    except JoseError as exc:
        kind = Reason.BAD_SIGNATURE if exc.error == "bad_signature" else Reason.MALFORMED
        raise _refuse(kind, f"manifest signature does not verify ({exc.error})") from exc
    try:
        manifest = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(Reason.MALFORMED, "signed manifest is not UTF-8 JSON") from exc
    if not isinstance(manifest, dict):
        raise _refuse(Reason.MALFORMED, "signed manifest is not a JSON object")
    return VerifiedManifest(manifest, payload, signer, text)


def verify_manifest(
    token: str | bytes,
    *,
    trusted_ca: x509.Certificate | Sequence[x509.Certificate],
    expected_signer: str | None = None,
    accepted: Sequence[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Verify a manifest JWS and return the manifest.

    Args:
        token: the compact JWS.
        trusted_ca: the CA certificate(s) the signer must be issued by (x5c's CA is ignored).
        expected_signer: the party code the signer's CN must be (``SCJG``), if any.
        accepted: the signer must be one of these (a peer's ``accepted_certificates``), if given.
        now: the moment validity is judged at.

    Raises:
        RefusedInput: ``reason`` tells why — bad_signature, unknown_signer,
            expired_certificate (also not yet valid) or malformed_token.
    """
    return open_manifest(
        token, trusted_ca=trusted_ca, expected_signer=expected_signer, accepted=accepted, now=now
    ).manifest


def verify_digest(data: bytes, expected_sha256: str) -> None:
    """Refuse ``data`` unless its SHA-256 (hex, case-insensitive) is ``expected_sha256``."""
    actual = hashlib.sha256(data).hexdigest()
    if not hmac.compare_digest(actual, str(expected_sha256).strip().lower()):
        raise _refuse(Reason.DIGEST_MISMATCH, f"sha256 is {actual}, the manifest says {expected_sha256}")


# --- encryption ---------------------------------------------------------------------------


def encrypt_file(data: bytes, recipient_cert: x509.Certificate) -> bytes:
    """Encrypt one data file to the recipient's certificate: compact JWE (ECDH-ES+A256KW, A256GCM)."""
    if len(data) > MAX_FILE_BYTES:
        raise ConfigurationError(f"data file of {len(data)} bytes exceeds the drop limit of {MAX_FILE_BYTES}")
    public = recipient_cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ConfigurationError("recipient certificate has no EC key to encrypt to")
    try:
        usage = recipient_cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_agreement:
            raise ConfigurationError("recipient certificate does not allow key agreement (use its signing certificate)")
    except x509.ExtensionNotFound:
        pass
    header = {"alg": KEY_ALG, "enc": ENC_ALG, "x5t#S256": _thumbprint(recipient_cert)}
    return jwe.encrypt_compact(header, data, ECKey.import_key(public), registry=_JWE).encode("ascii")


def decrypt_file(
    token: bytes | str, recipient_key: ec.EllipticCurvePrivateKey | Sequence[ec.EllipticCurvePrivateKey]
) -> bytes:
    """Decrypt a compact JWE made by :func:`encrypt_file` (or any JOSE library, same algorithms).

    ``recipient_key`` may be several keys (current and, during a rotation overlap, previous).

    Raises:
        RefusedInput: malformed_token, or undecryptable (wrong key, tampered ciphertext).
    """
    keys = [recipient_key] if isinstance(recipient_key, ec.EllipticCurvePrivateKey) else list(recipient_key)
    text = _token_text(token)
    if text.count(".") != 4:
        raise _refuse(Reason.MALFORMED, "a compact JWE has 5 parts")
    try:
        header = json.loads(_unb64url(text.split(".", 1)[0]))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(Reason.MALFORMED, "JWE header is not base64url JSON") from exc
    if not isinstance(header, dict) or header.get("alg") != KEY_ALG or header.get("enc") != ENC_ALG:
        raise _refuse(Reason.MALFORMED, f"JWE must use {KEY_ALG} with {ENC_ALG}")
    last: JoseError | None = None
    for key in keys:
        try:
            return jwe.decrypt_compact(text, ECKey.import_key(key), registry=_JWE).plaintext or b""
        except JoseError as exc:
            last = exc
        except ValueError as exc:  # cryptography's own complaints (bad point, wrong curve)
            last = JoseError(str(exc))
    raise _refuse(Reason.UNDECRYPTABLE, f"no key of ours opens this file ({last.error if last else 'no key'})") from last
