"""Reading and writing the PKI's files: certificates world-readable, keys 0600 from creation on.

Every write is atomic and durable: the data is written to a sibling, flushed to disk, renamed
over the target and the directory entry flushed too, so a crash or power loss leaves either the
old file or the new one (never an empty or half-written key, certificate or rotation record).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub.errors import ConfigurationError

__all__ = [
    "atomic_write",
    "load_certificate",
    "load_certificates",
    "load_private_key",
    "write_certificate",
    "write_private_key",
]


def _utcnow(now: dt.datetime | None) -> dt.datetime:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk; platforms that cannot
    # open a directory (Windows) make renames durable by other means.
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically and durably, the file created with ``mode``.

    The sibling is created with its final mode, so a key never exists with wider permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - would need 100 collisions
        raise ConfigurationError(f"cannot create a temporary file next to {path}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the content is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a private key as PKCS#8 PEM with mode 0600 from creation on."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write(path, pem, 0o600)


def write_certificate(path: Path, *certs: x509.Certificate) -> None:
    """Write one certificate (or a bundle of several) as PEM, world-readable."""
    atomic_write(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs), 0o644)


def load_certificate(path: Path) -> x509.Certificate:
    """Load the first PEM certificate of a file.

    Raises:
        ConfigurationError: the file is missing or holds no readable certificate.
    """
    return load_certificates(path)[0]


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Load every PEM certificate of a bundle file (at least one)."""
    try:
        certs = x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"certificate {path}: cannot read: {exc.__class__.__name__}") from exc
    return certs


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a PEM private key. The error never quotes the file's content."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"private key {path}: cannot read") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigurationError(f"private key {path}: not an EC key")
    return key
