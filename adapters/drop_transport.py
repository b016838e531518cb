"""What a file drop's transport is, and the errors it may raise.

One small interface, :class:`DropTransport` (list, stat, read, open for streamed reading,
write atomically, rename, mkdir, remove), with two implementations: a local or mounted
directory, the VPN share (adapters.drop_local.LocalTransport), and an SFTP server
(adapters.drop_sftp.SftpTransport). Paths are POSIX paths relative to the agency's drop root.
OS and paramiko errors are translated into the hub's errors exactly once, here, by
:func:`translate_errors`, so both transports map them alike and the adapter above never sees
a third-party exception::

    timeout, connection refused/reset, SSH protocol error  -> TransientError
    file vanished (another worker moved it)                -> DropFileMissing (TransientError)
    rename target already exists                           -> DropConflict (TransientError)
    authentication failed, unknown host key, bad key file  -> ConfigurationError
    host key CHANGED (possible interception)               -> FatalError
    permission denied, read-only share, disk full          -> FatalError
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO, Protocol

import paramiko

from hub.errors import ConfigurationError, FatalError, HubError, TransientError

__all__ = [
    "DropConflict",
    "DropEntry",
    "DropFileMissing",
    "DropReader",
    "DropTransport",
    "tmp_name",
    "translate_errors",
]


class DropFileMissing(TransientError):
    """A file or batch is not (or no longer) there: another worker took it, or it is not written yet."""


class DropConflict(TransientError):
    """A rename target exists already: another worker claimed the same batch first."""


@dataclass(frozen=True)
class DropEntry:
    name: str
    is_dir: bool
    size: int
    mtime: float


class DropTransport(Protocol):
    """The few file operations a file drop needs; paths are relative to the drop root."""

    def list(self, path: str) -> list[DropEntry]:
        """Entries of a directory (empty if it does not exist)."""

    def stat(self, path: str) -> DropEntry | None:
        """The entry at ``path``, or None when there is none."""

    def read(self, path: str) -> bytes: ...

    def open_read(self, path: str) -> "DropReader":
        """The file at ``path`` for reading block by block: seekable, local, closed by the caller."""

    def write_atomic(self, path: str, data: bytes) -> None:
        """Write under a hidden temporary name, flush and sync, then rename into place."""

    def rename(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``; fails with DropConflict if ``dst`` exists, DropFileMissing if ``src`` does not."""

    def mkdir(self, path: str) -> None:
        """Create a directory and its parents; an existing one is fine."""

    def remove(self, path: str) -> None:
        """Remove a file, or a directory with everything in it."""

    def close(self) -> None: ...


_FATAL_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EISDIR}


def _mapped(exc: BaseException, what: str) -> HubError:
    """The hub error for one OS/paramiko error (order matters: subclasses first)."""
    detail = f"{what}: {exc.__class__.__name__}: {exc}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return FatalError(f"{detail} (the server's host key changed: possible interception)")
    if isinstance(exc, paramiko.AuthenticationException):
        return ConfigurationError(f"{detail} (check the key and the user)")
    if isinstance(exc, paramiko.PasswordRequiredException):
        return ConfigurationError(f"{detail} (the key needs a passphrase)")
    if isinstance(exc, paramiko.SSHException):
        if "not found in known_hosts" in str(exc):
            return ConfigurationError(f"{detail} (configure the agency's host_key)")
        return TransientError(detail)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return TransientError(detail)
    if isinstance(exc, (ConnectionError, EOFError, socket.gaierror)):
        return TransientError(detail)
    if isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT:
        return DropFileMissing(detail)
    if isinstance(exc, FileExistsError) or getattr(exc, "errno", None) in (errno.EEXIST, errno.ENOTEMPTY):
        return DropConflict(detail)
    if isinstance(exc, PermissionError) or getattr(exc, "errno", None) in _FATAL_ERRNOS:
        return FatalError(detail)
    if isinstance(exc, OSError):
        # everything else an OS or a share can say (timeouts, resets, ESTALE, EIO, EBUSY…), and SFTP's
        # status-less "Failure", is worth another try
        return TransientError(detail)
    return FatalError(detail)


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn OS and paramiko errors raised inside into hub errors, naming ``what`` was being done."""
    try:
        yield
    except HubError:
        raise
    except (OSError, EOFError, paramiko.SSHException) as exc:
        raise _mapped(exc, what) from exc


class DropReader:
    """A local binary file opened for reading whose OS errors come out as hub errors."""

    def __init__(self, fh: BinaryIO, what: str) -> None:
        self._fh, self._what = fh, what

    def read(self, size: int = -1) -> bytes:
        with translate_errors(self._what):
            return self._fh.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        with translate_errors(self._what):
            return self._fh.seek(offset, whence)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "DropReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tmp_name(path: str) -> str:
    """The hidden (dot) name ``path`` is written under before its rename into place."""
    p = PurePosixPath(path)
    return str(p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp"))
