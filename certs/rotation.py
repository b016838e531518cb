"""A party directory's rotation record and the ``accepted-<kind>.pem`` bundles built from it.

``rotation.json`` lists each previous certificate still accepted and until when (its overlap);
``accepted-<kind>.pem`` holds the current certificate first, then those previous ones. Both are
rewritten whenever a rotation or ``init_pki`` changes the party's certificates, and both drop
previous certificates whose overlap has ended or that another CA issued.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from certs.pkifiles import atomic_write, load_certificate, load_certificates
from hub.errors import ConfigurationError

__all__ = ["ROTATION_FILE", "accepted_in_file", "forget_ended", "parse_time", "read_rotation", "refresh_party",
           "write_bundles", "write_rotation"]  # fmt: skip

ROTATION_FILE = "rotation.json"
_BUNDLE_PREFIX = "accepted-"


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def read_rotation(party_dir: Path) -> list[dict[str, str]]:
    """The party's rotation entries (none without a record).

    Raises:
        ConfigurationError: the record exists but cannot be read.
    """
    path = party_dir / ROTATION_FILE
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and {"kind", "serial", "cert", "key", "accept_until"} <= e.keys() for e in entries
        ):
            raise ValueError("not a list of rotation entries")
        for entry in entries:
            parse_time(entry["accept_until"])
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{path}: unreadable rotation record") from exc
    return entries


def write_rotation(party_dir: Path, entries: list[dict[str, str]]) -> None:
    """Replace the rotation record atomically and durably (a torn record would lose the overlap)."""
    atomic_write(party_dir / ROTATION_FILE, (json.dumps(entries, indent=2) + "\n").encode("utf-8"), 0o644)


def forget_ended(party_dir: Path, *, keep: list[dict[str, str]]) -> None:
    """Delete every file in ``previous/`` that no entry of ``keep`` names (old keys included)."""
    kept_files = {e["cert"] for e in keep} | {e["key"] for e in keep}
    previous_dir = party_dir / "previous"
    if previous_dir.is_dir():
        for path in previous_dir.iterdir():
            if f"previous/{path.name}" not in kept_files:
                path.unlink()


def _pem(certs: Iterable[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def write_bundles(party_dir: Path, entries: list[dict[str, str]], kinds: Iterable[str]) -> None:
    """Write ``accepted-<kind>.pem`` for each kind with a current certificate: it, then ``entries``' ones.

    A bundle whose content would not change is left alone, so its file identity changes only
    when what it accepts does (a running SOAP client is rebuilt on that).
    """
    for kind in kinds:
        current = party_dir / f"{kind}.pem"
        if not current.exists():
            continue
        bundle = [load_certificate(current)] + [
            load_certificate(party_dir / e["cert"]) for e in entries if e["kind"] == kind
        ]
        target, data = party_dir / f"{_BUNDLE_PREFIX}{kind}.pem", _pem(bundle)
        if not target.exists() or target.read_bytes() != data:
            atomic_write(target, data, 0o644)


def _issued_by(path: Path, ca: x509.Certificate) -> bool:
    try:
        load_certificate(path).verify_directly_issued_by(ca)
    except (ConfigurationError, ValueError, TypeError, InvalidSignature):
        return False
    return True


def refresh_party(party_dir: Path, *, kinds: Iterable[str], ca: x509.Certificate, now: dt.datetime) -> None:
    """Bring a party's record and bundles in line with its current certificates (after ``init_pki``).

    Entries whose overlap has ended, or whose certificate another CA issued (``--force`` made a
    new CA), are dropped with their files; every existing bundle, or one a remaining entry
    needs, is rewritten with the current certificate first. A directory never rotated is left alone.
    """
    kinds = list(kinds)
    bundles = [k for k in kinds if (party_dir / f"{_BUNDLE_PREFIX}{k}.pem").exists()]
    record = party_dir / ROTATION_FILE
    if not record.exists() and not bundles:
        return
    entries = read_rotation(party_dir)
    keep = [e for e in entries if parse_time(e["accept_until"]) > now and _issued_by(party_dir / e["cert"], ca)]
    if keep != entries:
        write_rotation(party_dir, keep)
        forget_ended(party_dir, keep=keep)
    write_bundles(party_dir, keep, [k for k in kinds if k in bundles or any(e["kind"] == k for e in keep)])


def _kind_of(file_name: str) -> str:
    stem = file_name.removesuffix(".pem")
    return stem.removeprefix(_BUNDLE_PREFIX)


def accepted_in_file(path: Path) -> list[tuple[x509.Certificate, dt.datetime | None]]:
    """The certificates a peer-certificate file stands for, each with when its acceptance ends.

    ``path`` is a party's certificate (``signing.pem``), its bundle (``accepted-signing.pem``),
    or any PEM file of one or more certificates. The end is None for the current certificate
    (its own expiry applies, which the verifier checks). Beside a rotation record (a PKI party
    directory) the record decides: the current certificate comes first, previous ones are
    accepted until their overlap ends (a ``signing.pem`` gains them too), and a bundle's
    certificates the record no longer names are not accepted (their overlap ended after the
    bundle was written). Elsewhere (an agency's own file) every certificate of the file is accepted.

    Raises:
        ConfigurationError: the file, or the rotation record beside it, cannot be read.
    """
    path = Path(path)
    certs = load_certificates(path)
    party_dir, kind = path.parent, _kind_of(path.name)
    current_path = party_dir / f"{kind}.pem"
    if not (party_dir / ROTATION_FILE).exists() or not current_path.exists():
        return [(cert, None) for cert in certs]
    entries = [e for e in read_rotation(party_dir) if e["kind"] == kind]
    current = load_certificate(current_path)
    result: list[tuple[x509.Certificate, dt.datetime | None]] = [(current, None)]
    seen = {current.fingerprint(hashes.SHA256())}
    previous = [(load_certificate(party_dir / e["cert"]), parse_time(e["accept_until"])) for e in entries
                if (party_dir / e["cert"]).exists()]  # fmt: skip
    for cert, until in previous:
        if cert.fingerprint(hashes.SHA256()) not in seen:
            seen.add(cert.fingerprint(hashes.SHA256()))
            result.append((cert, until))
    return result
