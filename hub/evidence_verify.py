"""Verify a Shenguan Hub evidence bundle offline: ``python -m hub.evidence_verify DIR [--ca CA.pem]``.

Stand-alone on purpose: it needs the Python standard library and ``cryptography`` only and
imports nothing from the hub, so this one file can be copied to the machine of whoever checks
the evidence. The procedure it follows is written out in docs/evidence.md:

1. the manifest signature (compact JWS, ES256, signer certificate in ``x5c``) is valid, the signer
   certificate was issued by the trusted CA (``--ca``, else the bundle's own certificates/ca.pem,
   which only proves internal consistency) and may sign documents (:func:`may_sign_documents`: a
   TLS-only certificate may not);
2. every file the manifest lists has its SHA-256, and no other file is present;
3. every audit entry's hash is recomputed from its content and its predecessor's hash;
4. every entry sits in the chain list with the same hashes, and the chain links from the
   genesis hash to the head named in the manifest, each entry's prev_hash the hash before it;
5. every stored payload (licence and violation revisions) hashes to its recorded digest, and
   every licence revision's digest is the payload digest of a chained licence entry;
6. every delivery receipt entry that keeps its agency's signatures (agencies that sign their
   receipts) is borne out by them: each is an ES256 JWS typed ``receipt+json`` by a certificate
   of the trusted CA whose CN is the agency, and acknowledges each listed message with the same
   ack id, digest and time of receipt. Whoever rewrites the chain still lacks the agency's key.

Exit status: 0 when everything holds, 1 when something does not (each problem is printed),
2 when the bundle cannot be read at all.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

GENESIS = "0" * 64
FORMAT = "shenguan-evidence/1"
SIGNATURE_FILES = {"manifest.json", "manifest.jws"}


# --- the hash of one audit entry (the same canonical JSON as the hub's log) -------------------
def entry_hash(entry: dict[str, Any], prev_hash: str) -> str:
    """SHA-256 over the previous hash and the entry's content, as canonical JSON."""
    body = json.dumps(
        {"prev": prev_hash, "at": entry["at"], "actor": entry["actor"], "action": entry["action"],
         "subject": entry["subject"], "detail": entry["detail"], "payload_digest": entry["payload_digest"]},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str,
    )  # fmt: skip
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def payload_digest(payload: Any) -> str:
    """SHA-256 of a stored payload in canonical JSON (keys sorted, compact, UTF-8 unescaped)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jsonl(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    rows = []
    if not path.is_file():
        return rows
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            problems.append(f"{path.name} line {number}: not valid JSON ({exc.msg})")
    return rows


# --- 1. signature --------------------------------------------------------------------------
def _trusted_ca(bundle: Path, ca_path: Path | None, problems: list[str]) -> tuple[x509.Certificate | None, str]:
    ca_file = ca_path or bundle / "certificates" / "ca.pem"
    trust = "the CA given with --ca" if ca_path else "the bundle's own CA (pass --ca to check against yours)"
    try:
        return x509.load_pem_x509_certificate(ca_file.read_bytes()), trust
    except FileNotFoundError:
        problems.append(f"{ca_file}: no CA to check the signer against")
    except ValueError:
        problems.append(f"{ca_file}: not a PEM certificate")
    return None, trust


def _open_jws(token: str, ca: x509.Certificate | None, trust: str, where: str,
              problems: list[str]) -> tuple[dict[str, Any], bytes, x509.Certificate] | None:  # fmt: skip
    """Header, payload and signer of a compact ES256 JWS whose signature verifies with the key of
    its ``x5c`` certificate; that certificate must come from ``ca`` and may sign documents.
    None (with the problem noted) when the token cannot be read or its signature does not hold."""
    try:
        header_b64, payload_b64, signature_b64 = token.strip().split(".")
        header = json.loads(_b64url(header_b64))
        signer = x509.load_der_x509_certificate(base64.b64decode(header["x5c"][0]))
        signature, payload = _b64url(signature_b64), _b64url(payload_b64)
    except (ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as exc:
        problems.append(f"{where}: malformed ({type(exc).__name__}: {exc})")
        return None
    if header.get("alg") != "ES256" or len(signature) != 64:
        problems.append(f"{where}: algorithm {header.get('alg')!r} is not ES256")
        return None
    thumbprint = base64.urlsafe_b64encode(signer.fingerprint(hashes.SHA256())).rstrip(b"=").decode()
    if header.get("x5t#S256") not in (None, thumbprint):
        problems.append(f"{where}: x5t#S256 does not match the certificate in x5c")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public_key = signer.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise InvalidSignature("not an EC key")
        public_key.verify(der, f"{header_b64}.{payload_b64}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        problems.append(f"{where}: the signature does not verify")
        return None
    if ca is not None:
        try:
            signer.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            problems.append(f"{where}: the signer was not issued by {trust}")
    if not may_sign_documents(signer):
        problems.append(f"{where}: the signer's certificate may not sign documents (a TLS-only certificate, "
                        "or its key usage forbids signatures)")  # fmt: skip
    return header, payload, signer


_TLS_ONLY = {x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH}


def may_sign_documents(cert: x509.Certificate) -> bool:
    """Key usage allows signatures, and the certificate is not restricted to TLS.

    A party's TLS client certificate also has digitalSignature; without the EKU check a stolen
    TLS key could sign receipts, manifests or drops. The hub's own rule (certs.dropseal imports
    it from here, so that this file stays stand-alone and the two cannot drift apart).
    """
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        # contentCommitment (nonRepudiation) is the bit a CA sets for signing documents; a bureau's
        # signing certificate may carry it alone, and the verifier accepted it before the rules were shared
        if not (usage.digital_signature or usage.content_commitment):
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        purposes = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return True
    return not purposes <= _TLS_ONLY


def _valid_at(signer: x509.Certificate, when: dt.datetime) -> bool:
    when = when if when.tzinfo else when.replace(tzinfo=dt.UTC)  # the hub writes its times in UTC
    return signer.not_valid_before_utc <= when <= signer.not_valid_after_utc


def _common_name(cert: x509.Certificate) -> str:
    cn = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else cert.subject.rfc4514_string()


def check_signature(bundle: Path, manifest_bytes: bytes, ca_path: Path | None, problems: list[str]) -> str:
    """Check manifest.jws; return a line saying who signed (or that nobody did)."""
    jws_path = bundle / "manifest.jws"
    if not jws_path.is_file():
        return "UNSIGNED: the hub had no signing key when it exported this bundle"
    ca, trust = _trusted_ca(bundle, ca_path, problems)
    try:
        token = jws_path.read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        problems.append(f"manifest.jws: malformed (not ASCII: {exc})")
        return "signature unreadable"
    opened = _open_jws(token, ca, trust, "manifest.jws", problems)
    if opened is None:
        return "signature refused"
    _, payload, signer = opened
    if payload != manifest_bytes:
        problems.append("manifest.json: differs from the manifest that was signed")
    try:
        if not _valid_at(signer, dt.datetime.fromisoformat(json.loads(manifest_bytes)["exported_at"])):
            problems.append("manifest.jws: the signer's certificate was not valid when the bundle was exported")
    except (ValueError, KeyError, TypeError):
        problems.append("manifest.json: exported_at is missing or not a timestamp")
    return f"signed by {_common_name(signer)} (certificate serial {signer.serial_number:x}), checked against {trust}"


# --- 2. files ------------------------------------------------------------------------------
def check_files(bundle: Path, manifest: dict[str, Any], problems: list[str]) -> int:
    listed = manifest.get("files") or {}
    for name, expected in sorted(listed.items()):
        path = bundle / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            problems.append(f"{name}: a manifest path outside the bundle")
        elif not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
        elif _sha256_file(path) != expected:
            problems.append(f"{name}: its SHA-256 differs from the manifest (the file was changed)")
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    for name in sorted(present - set(listed) - SIGNATURE_FILES):
        problems.append(f"{name}: present but not in the manifest")
    return len(listed)


# --- 3.-4. entries and chain ------------------------------------------------------------------
def check_chain(bundle: Path, manifest: dict[str, Any], problems: list[str]) -> tuple[int, int]:
    links = _jsonl(bundle / "chain.jsonl", problems)
    by_id: dict[int, dict[str, Any]] = {}
    prev, last_id = GENESIS, 0
    for link in links:
        if link.get("prev_hash") != prev:
            problems.append(f"chain: entry {link.get('id')} does not link to the entry before it")
        if not isinstance(link.get("id"), int) or link["id"] <= last_id:
            problems.append(f"chain: entry ids out of order at {link.get('id')!r}")
        prev, last_id = link.get("entry_hash"), link.get("id") if isinstance(link.get("id"), int) else last_id
        by_id[link.get("id")] = link
    head = manifest.get("chain") or {}
    if head.get("head_hash") != prev or head.get("head_id", 0) != last_id:
        problems.append(f"chain: ends at entry {last_id}, the manifest names head {head.get('head_id')}")
    entries = _jsonl(bundle / "entries.jsonl", problems)
    for entry in entries:
        number = entry.get("id")
        try:
            recomputed = entry_hash(entry, entry["prev_hash"])
        except KeyError as exc:
            problems.append(f"entry {number}: field {exc} missing")
            continue
        if recomputed != entry.get("entry_hash"):
            problems.append(f"entry {number}: its content does not match its hash (altered: "
                            f"{entry.get('action')} {entry.get('subject')})")  # fmt: skip
        link = by_id.get(number)
        if link is None:
            problems.append(f"entry {number}: not in the chain")
        elif (link["prev_hash"], link["entry_hash"]) != (entry.get("prev_hash"), entry.get("entry_hash")):
            problems.append(f"entry {number}: its hashes differ from the chain's")
    if len(entries) != manifest.get("entries"):
        problems.append(f"entries.jsonl: {len(entries)} entries, the manifest says {manifest.get('entries')}")
    return len(entries), len(links)


# --- 5. payloads ---------------------------------------------------------------------------------
def check_payloads(bundle: Path, problems: list[str]) -> int:
    chained = {e.get("payload_digest") for e in _jsonl(bundle / "entries.jsonl", [])
               if str(e.get("action", "")).startswith("licence.")}  # fmt: skip
    count = 0
    for name, label in (("licence-revisions.jsonl", "decision_no"), ("violation-revisions.jsonl", "agency_record_id")):
        for row in _jsonl(bundle / name, problems):
            count += 1
            what = f"{name}: {row.get(label)} version {row.get('version')}"
            if payload_digest(row.get("payload")) != row.get("digest"):
                problems.append(f"{what}: the payload does not match its digest (altered)")
            elif name.startswith("licence") and row.get("digest") not in chained:
                problems.append(f"{what}: no licence entry in the chain carries its digest")
    return count


# --- 6. the agencies' signed receipts ------------------------------------------------------------
RECEIPT_TYPE = "receipt+json"


def check_agency_receipts(bundle: Path, ca_path: Path | None, problems: list[str]) -> tuple[int, int]:
    """Each receipt entry that keeps its agency's signatures: every one verifies, is the agency's
    own (its certificate's CN is the agency code, valid when the entry was written), is typed as a
    receipt, and acknowledges each receipt the entry lists with the same ack id, digest and time.
    Returns (receipts proved by an agency's signature, receipts the hub's word alone stands for)."""
    proved = unproved = 0
    ca = trust = None
    for entry in _jsonl(bundle / "entries.jsonl", []):
        detail = entry.get("detail") if entry.get("action") == "delivery.receipt" else None
        if not isinstance(detail, dict):
            continue
        listed = detail.get("receipts") or []
        tokens = detail.get("agency_signatures") or []
        if not tokens:
            unproved += len(listed)
            continue
        if ca is None:
            ca, trust = _trusted_ca(bundle, ca_path, problems)
        agency, where = detail.get("agency"), f"entry {entry.get('id')}"
        acks: dict[Any, dict[str, Any]] = {}
        for number, token in enumerate(tokens, 1):
            acks.update(_signed_acks(token, agency, entry.get("at"), ca, str(trust),
                                     f"{where}: {agency}'s receipt signature {number}", problems))  # fmt: skip
        for receipt in listed:
            ack = acks.get(receipt.get("message_id"))
            if ack is None or _acknowledged(ack) != _acknowledged(receipt):
                problems.append(f"{where}: {agency} did not sign the receipt of message {receipt.get('message_id')} "
                                f"(licence {receipt.get('licence')}) that the entry lists")  # fmt: skip
            else:
                proved += 1
    return proved, unproved


def _acknowledged(ack: dict[str, Any]) -> tuple[str, Any, dt.datetime | None]:
    """What a receipt says of one message: its ack id, the digest received and when (the hub
    rewrites the agency's timestamp in its own ISO form, so the instants are compared)."""
    try:
        at = dt.datetime.fromisoformat(str(ack.get("received_at")))
    except ValueError:
        at = None
    return str(ack.get("ack_id")), ack.get("digest"), at


def _signed_acks(token: Any, agency: Any, at: Any, ca: x509.Certificate | None, trust: str, where: str,
                 problems: list[str]) -> dict[Any, dict[str, Any]]:  # fmt: skip
    """The acks, by message id, of one receipt its agency signed; {} (problem noted) if it does not hold."""
    opened = _open_jws(token, ca, trust, where, problems) if isinstance(token, str) else None
    if opened is None:
        if not isinstance(token, str):
            problems.append(f"{where}: not a compact JWS")
        return {}
    header, payload, signer = opened
    if header.get("cty") != RECEIPT_TYPE:
        problems.append(f"{where}: it signs a {header.get('cty')!r} document, not a receipt")
        return {}
    if _common_name(signer) != agency:
        problems.append(f"{where}: signed by {_common_name(signer)!r}, not by the agency")
        return {}
    try:
        if not _valid_at(signer, dt.datetime.fromisoformat(str(at))):
            problems.append(f"{where}: the agency's certificate was not valid when the receipt was logged")
        acks = json.loads(payload)["acks"]
        return {a["message_id"]: a for a in acks}
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"{where}: the signed receipt cannot be read ({type(exc).__name__}: {exc})")
        return {}


def verify(bundle: Path, ca: Path | None = None) -> tuple[list[str], list[str]]:
    """Check a bundle; return (lines of what held, problems). Raises OSError/ValueError if unreadable."""
    manifest_bytes = (bundle / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} bundle (format {manifest.get('format')!r})")
    problems: list[str] = []
    signed = check_signature(bundle, manifest_bytes, ca, problems)
    files = check_files(bundle, manifest, problems)
    entries, links = check_chain(bundle, manifest, problems)
    payloads = check_payloads(bundle, problems)
    proved, unproved = check_agency_receipts(bundle, ca, problems)
    facts = [f"bundle for {json.dumps(manifest.get('subject'), ensure_ascii=False)}, exported {manifest.get('exported_at')}",
             signed, f"{files} files listed", f"{entries} entries recomputed, {links} chain links checked",
             f"{payloads} stored payloads checked",
             f"{proved} delivery receipts proved by the agency's signature, {unproved} logged by the hub alone"]  # fmt: skip
    return facts, list(dict.fromkeys(problems))  # a missing CA is named once, not once per signature


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.evidence_verify", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the evidence bundle directory")
    parser.add_argument("--ca", type=Path, default=None, help="the CA you trust (obtained independently)")
    parser.add_argument("--require-signature", action="store_true", help="an unsigned bundle fails")
    args = parser.parse_args(argv)
    try:
        facts, problems = verify(args.bundle, args.ca)
    except (OSError, ValueError) as exc:
        print(f"error: cannot read the bundle: {exc}", file=sys.stderr)
        return 2
    if args.require_signature and not (args.bundle / "manifest.jws").is_file():
        problems.append("manifest.jws: missing, and a signature was required")
    for line in facts:
        print(line)
    for problem in problems:
        print(f"FAILED: {problem}")
    print("evidence intact" if not problems else f"evidence NOT intact: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
