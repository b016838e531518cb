"""Certificate expiry status and rotation with an overlap period.

Rotation issues a new key and certificate for a party and moves the old pair to
``previous/``. The old certificate stays *accepted* until the overlap ends: peers that pin
a party's certificate (drop signatures, WS-Security) take ``accepted_certificates`` (or, given
a file, certs.rotation.accepted_in_file) and so keep verifying the old one while the agency switches. Each party directory holds a
``rotation.json`` (what is accepted until when) and ``accepted-<kind>.pem`` bundles with
the current certificate plus every previous one still inside its overlap.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from certs.pki import (
    KINDS,
    LEAF_VALIDITY_DAYS,
    PartyFiles,
    PkiLayout,
    _utcnow,
    issue_leaf,
    load_certificate,
    load_private_key,
    write_certificate,
    write_private_key,
)
from certs.rotation import ROTATION_FILE, forget_ended, parse_time, read_rotation, write_bundles, write_rotation
from hub.errors import ConfigurationError

__all__ = [
    "WARN_DAYS",
    "CRITICAL_DAYS",
    "CertStatus",
    "Level",
    "accepted_certificates",
    "accepted_keys",
    "cert_status",
    "rotate",
    "worst_level",
]

WARN_DAYS = 30
CRITICAL_DAYS = 7
DEFAULT_OVERLAP_DAYS = 14


class Level(enum.StrEnum):
    """How urgently a certificate needs attention, mildest first."""

    RETIRED = "retired"  # rotated out, accepted until its overlap ends: for information only
    OK = "ok"
    WARN = "warn"  # 30 days or fewer left
    CRITICAL = "critical"  # 7 days or fewer left
    EXPIRED = "expired"
    UNREADABLE = "unreadable"  # the file cannot be read: whatever uses it fails now

    @property
    def needs_attention(self) -> bool:
        return self not in (Level.RETIRED, Level.OK)


_ORDER = list(Level)


@dataclass(frozen=True)
class CertStatus:
    """One certificate's identity and time left (or why its file cannot be read)."""

    name: str  # "ca", "hub/server", "SCJG/signing", "SCJG/signing.previous"
    path: Path
    subject: str
    serial: str  # hex
    not_after: dt.datetime | None  # None: unreadable
    days_left: int | None  # whole days until not_after (negative once expired); None: unreadable
    level: Level
    accepted_until: dt.datetime | None = None  # a previous certificate: when its overlap ends
    error: str | None = None  # an unreadable file: why (never its content)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "subject": self.subject,
            "serial": self.serial,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "days_left": self.days_left,
            "level": self.level.value,
            "accepted_until": self.accepted_until.isoformat() if self.accepted_until else None,
            "error": self.error,
        }


def _level(cert: x509.Certificate, now: dt.datetime) -> tuple[int, Level]:
    remaining = cert.not_valid_after_utc - now
    days = remaining.days  # floor: 6 days 23 hours counts as 6
    if remaining <= dt.timedelta(0):
        return days, Level.EXPIRED
    if days <= CRITICAL_DAYS:
        return days, Level.CRITICAL
    if days <= WARN_DAYS:
        return days, Level.WARN
    return days, Level.OK


def _status(name: str, path: Path, now: dt.datetime, *, accepted_until: dt.datetime | None = None) -> CertStatus:
    try:
        cert = load_certificate(path)
    except ConfigurationError as exc:  # one bad file must not hide every other certificate's state
        return CertStatus(name, path, "", "", None, None, Level.UNREADABLE, error=str(exc))
    days, level = _level(cert, now)
    if accepted_until is not None:
        # Rotated out: its own expiry no longer matters to anyone; what does is the overlap's end.
        level = Level.RETIRED
    return CertStatus(
        name, path, cert.subject.rfc4514_string(), format(cert.serial_number, "x"),
        cert.not_valid_after_utc, days, level, accepted_until,
    )


def cert_status(directory: Path, *, now: dt.datetime | None = None) -> list[CertStatus]:
    """Every certificate of the PKI (CA, hub, parties, still-accepted previous ones) with its expiry.

    Previous certificates are ``RETIRED`` (informational, with the end of their overlap); a file
    that cannot be read, or a party's unreadable rotation record, is ``UNREADABLE`` and the
    others are still reported.

    Raises:
        ConfigurationError: there is no CA in ``directory`` (run ``hub certs init``).
    """
    now = _utcnow(now)
    layout = PkiLayout(Path(directory))
    if not layout.ca_cert.exists():
        raise ConfigurationError(f"no PKI in {layout.root}: run `hub certs init` first")
    result = [_status("ca", layout.ca_cert, now)]
    for party in layout.existing_parties():
        files = layout.party(party)
        for kind in KINDS:
            if files.cert(kind).exists():
                result.append(_status(f"{party}/{kind}", files.cert(kind), now))
        try:
            entries = read_rotation(files.directory)
        except ConfigurationError as exc:
            record = files.directory / ROTATION_FILE
            result.append(CertStatus(f"{party}/rotation", record, "", "", None, None, Level.UNREADABLE,
                                     error=str(exc)))  # fmt: skip
            continue
        for entry in entries:
            until = parse_time(entry["accept_until"])
            if until > now:
                result.append(_status(f"{party}/{entry['kind']}.previous", files.directory / entry["cert"], now,
                                      accepted_until=until))  # fmt: skip
    return result


def worst_level(statuses: list[CertStatus]) -> Level:
    """The most urgent level among ``statuses`` (``ok`` for none; retired certificates count as ok)."""
    return max((s.level for s in statuses if s.level is not Level.RETIRED), key=_ORDER.index, default=Level.OK)


# --- rotation -----------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, list[str]]:
    party, _, kind = name.partition("/")
    if not party:
        raise ConfigurationError(f"certificate name {name!r}: expected PARTY or PARTY/KIND")
    if kind and kind not in KINDS:
        raise ConfigurationError(f"certificate name {name!r}: kind must be one of {', '.join(KINDS)}")
    return party, [kind] if kind else list(KINDS)


def _party_files(layout: PkiLayout, party: str) -> PartyFiles:
    if party == "ca":
        raise ConfigurationError("the CA is not rotated in place: re-create the PKI with `hub certs init --force`")
    files = layout.party(party)
    if not files.directory.is_dir():
        raise ConfigurationError(f"no certificates for {party!r} in {layout.root}")
    return files


def rotate(
    directory: Path,
    name: str,
    *,
    overlap_days: int = DEFAULT_OVERLAP_DAYS,
    validity_days: int = LEAF_VALIDITY_DAYS,
    now: dt.datetime | None = None,
) -> list[str]:
    """Issue a new key and certificate for a party (``SCJG``, ``hub``) or one of its certificates
    (``SCJG/signing``), keeping the previous one accepted for ``overlap_days``.

    Entries whose overlap has already ended are forgotten and their old keys deleted.

    Returns:
        The certificate names that were rotated.
    """
    now = _utcnow(now)
    layout = PkiLayout(Path(directory))
    party, kinds = _split_name(name)
    files = _party_files(layout, party)
    ca_cert, ca_key = load_certificate(layout.ca_cert), load_private_key(layout.ca_key)
    previous_dir = files.directory / "previous"
    entries = [e for e in read_rotation(files.directory) if parse_time(e["accept_until"]) > now]
    forget_ended(files.directory, keep=entries)
    rotated = []
    for kind in kinds:
        old_cert_path, old_key_path = files.cert(kind), files.key(kind)
        old = load_certificate(old_cert_path)
        stem = f"{kind}-{old.serial_number:x}"
        previous_dir.mkdir(exist_ok=True, mode=0o700)
        # os.replace keeps the old key's 0600 mode: no window with wider permissions.
        old_key_path.replace(previous_dir / f"{stem}.key")
        old_cert_path.replace(previous_dir / f"{stem}.pem")
        cert, key = issue_leaf(
            kind, old.subject, ca_cert=ca_cert, ca_key=ca_key, now=now, validity_days=validity_days
        )
        write_private_key(files.key(kind), key)
        write_certificate(files.cert(kind), cert)
        accept_until = min(now + dt.timedelta(days=overlap_days), old.not_valid_after_utc)
        entries.append({
            "kind": kind,
            "serial": format(old.serial_number, "x"),
            "cert": f"previous/{stem}.pem",
            "key": f"previous/{stem}.key",
            "accept_until": accept_until.isoformat(),
        })
        rotated.append(f"{party}/{kind}")
    write_rotation(files.directory, entries)
    write_bundles(files.directory, entries, KINDS)
    return rotated


def _accepted(directory: Path, name: str, now: dt.datetime | None) -> tuple[str, Path, list[dict[str, str]]]:
    party, kind = name.partition("/")[::2]
    kind = kind or "signing"
    _split_name(f"{party}/{kind}")
    now = _utcnow(now)
    files = _party_files(PkiLayout(Path(directory)), party)
    entries = [
        e for e in read_rotation(files.directory)
        if e["kind"] == kind and parse_time(e["accept_until"]) > now
    ]
    return kind, files.directory, entries


def accepted_certificates(
    directory: Path, name: str, now: dt.datetime | None = None
) -> list[x509.Certificate]:
    """The certificates of a party to accept at ``now``: the current one, then previous ones in overlap.

    Args:
        directory: the PKI root.
        name: ``PARTY/KIND`` (``SCJG/signing``, ``hub/client``); a bare party means its signing certificate.
        now: the moment of the check (default: now, UTC).
    """
    kind, party_dir, entries = _accepted(directory, name, now)
    return [load_certificate(party_dir / f"{kind}.pem")] + [load_certificate(party_dir / e["cert"]) for e in entries]


def previous_key_files(directory: Path, name: str, now: dt.datetime | None = None) -> list[Path]:
    """The key files of ``accepted_keys`` but the current one: what a seal built from files (not
    from the PKI) needs to decrypt drops a peer still encrypts to our previous certificate."""
    _, party_dir, entries = _accepted(directory, name, now)
    return [party_dir / e["key"] for e in entries]


def accepted_keys(
    directory: Path, name: str, now: dt.datetime | None = None
) -> list[ec.EllipticCurvePrivateKey]:
    """The private keys matching ``accepted_certificates`` (same order): a party decrypting drops
    that peers encrypted to its old certificate during the overlap needs the old key too."""
    kind, party_dir, _ = _accepted(directory, name, now)
    previous = previous_key_files(directory, name, now)
    return [load_private_key(path) for path in [party_dir / f"{kind}.key", *previous]]

