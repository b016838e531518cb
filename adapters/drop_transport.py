"""Where a file drop's files live: a local or mounted directory, or an SFTP server.

One small interface, :class:`DropTransport` (list, stat, read, open for streamed reading,
write atomically, rename, mkdir, remove), with two implementations. Paths are POSIX paths relative to the agency's
drop root. OS and paramiko errors are translated into the hub's errors exactly once, by
:func:`translate_errors`, so the adapter above never sees a third-party exception::

    timeout, connection refused/reset, SSH protocol error  -> TransientError
    file vanished (another worker moved it)                -> DropFileMissing (TransientError)
    rename target already exists                           -> DropConflict (TransientError)
    authentication failed, unknown host key, bad key file  -> ConfigurationError
    host key CHANGED (possible interception)               -> FatalError
    permission denied, read-only share, disk full          -> FatalError

SFTP never trusts an unknown server: the expected host public key comes from the agency's
data file and paramiko's ``RejectPolicy`` refuses anything else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat as stat_mod
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

import paramiko

from hub.errors import ConfigurationError, FatalError, HubError, TransientError

__all__ = [
    "DropConflict",
    "DropEntry",
    "DropFileMissing",
    "DropReader",
    "DropTransport",
    "LocalTransport",
    "SftpTransport",
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


_TRANSIENT_ERRNOS = {
    errno.ETIMEDOUT, errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.ESTALE, errno.EIO, errno.EAGAIN, errno.EBUSY,
}  # fmt: skip
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
        # a share that hiccups (or SFTP's status-less "Failure") is worth another try
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


def _tmp_name(path: str) -> str:
    p = PurePosixPath(path)
    return str(p.with_name(f".{p.name}.{uuid.uuid4().hex[:8]}.tmp"))


class LocalTransport:
    """A local or mounted directory (the VPN share)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _p(self, path: str) -> Path:
        return self.root / path

    def list(self, path: str) -> list[DropEntry]:
        with translate_errors(f"list {path}"):
            try:
                names = sorted(os.listdir(self._p(path)))
            except FileNotFoundError:
                return []
            entries = []
            for name in names:
                entry = self.stat(f"{path}/{name}")
                if entry is not None:
                    entries.append(entry)
            return entries

    def stat(self, path: str) -> DropEntry | None:
        with translate_errors(f"stat {path}"):
            try:
                st = os.stat(self._p(path))
            except FileNotFoundError:
                return None
            return DropEntry(PurePosixPath(path).name, stat_mod.S_ISDIR(st.st_mode), st.st_size, st.st_mtime)

    def read(self, path: str) -> bytes:
        with translate_errors(f"read {path}"):
            return self._p(path).read_bytes()

    def open_read(self, path: str) -> DropReader:
        with translate_errors(f"read {path}"):
            return DropReader(open(self._p(path), "rb"), f"read {path}")

    def write_atomic(self, path: str, data: bytes) -> None:
        tmp = self._p(_tmp_name(path))
        with translate_errors(f"write {path}"):
            try:
                with open(tmp, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self._p(path))
            finally:
                tmp.unlink(missing_ok=True)
            # the rename is only durable once the directory entry is synced too
            dir_fd = os.open(self._p(path).parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def rename(self, src: str, dst: str) -> None:
        with translate_errors(f"rename {src} -> {dst}"):
            target = self._p(dst)
            if target.exists():
                raise FileExistsError(errno.EEXIST, "target exists", dst)
            # os.rename replaces files silently; the existence check above plus the
            # kernel's refusal to replace a non-empty directory keeps claims exclusive
            os.rename(self._p(src), target)

    def mkdir(self, path: str) -> None:
        with translate_errors(f"mkdir {path}"):
            self._p(path).mkdir(parents=True, exist_ok=True)

    def remove(self, path: str) -> None:
        with translate_errors(f"remove {path}"):
            target = self._p(path)
            if target.is_dir():
                for child in target.iterdir():
                    self.remove(f"{path}/{child.name}")
                target.rmdir()
            else:
                target.unlink(missing_ok=True)

    def close(self) -> None:
        return None


class SftpTransport:
    """An SFTP server reached with key authentication and a pinned host key.

    Args:
        host, port, username: where to connect.
        root: the drop root on the server (absolute, or relative to the login directory).
        pkey: the hub's private key.
        host_key: the server's expected public key; any other key is refused.
        connect_timeout, read_timeout: seconds for connecting / for each SFTP operation.
        staging_dir: where ``open_read`` keeps its local copies (default: the system's temp directory).
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        username: str,
        root: str,
        pkey: paramiko.PKey,
        host_key: paramiko.PKey,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        staging_dir: Path | None = None,
    ) -> None:
        self.host, self.port, self.username = host, port, username
        self._staging_dir = staging_dir
        self.root = root.rstrip("/") or "/"
        self._pkey, self._host_key = pkey, host_key
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    def _conn(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._sftp
            self.close()
        client = paramiko.SSHClient()
        # pin the agency's key; never learn keys on first use
        hostname = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        client.get_host_keys().add(hostname, self._host_key.get_name(), self._host_key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        with translate_errors(f"connect sftp://{self.username}@{self.host}:{self.port}"):
            try:
                client.connect(
                    self.host, port=self.port, username=self.username, pkey=self._pkey,
                    timeout=self._connect_timeout, banner_timeout=self._connect_timeout,
                    auth_timeout=self._connect_timeout, channel_timeout=self._connect_timeout,
                    allow_agent=False, look_for_keys=False,
                )  # fmt: skip
                sftp = client.open_sftp()
                sftp.get_channel().settimeout(self._read_timeout)
            except BaseException:
                client.close()
                raise
        self._client, self._sftp = client, sftp
        return sftp

    def _p(self, path: str) -> str:
        return f"{self.root.rstrip('/')}/{path}" if path else self.root

    def list(self, path: str) -> list[DropEntry]:
        with translate_errors(f"list {path}"):
            try:
                attrs = self._conn().listdir_attr(self._p(path))
            except FileNotFoundError:
                return []
            return sorted(
                (DropEntry(a.filename, stat_mod.S_ISDIR(a.st_mode or 0), a.st_size or 0, float(a.st_mtime or 0))
                 for a in attrs),
                key=lambda e: e.name,
            )  # fmt: skip

    def stat(self, path: str) -> DropEntry | None:
        with translate_errors(f"stat {path}"):
            try:
                a = self._conn().stat(self._p(path))
            except FileNotFoundError:
                return None
            return DropEntry(PurePosixPath(path).name, stat_mod.S_ISDIR(a.st_mode or 0), a.st_size or 0,
                             float(a.st_mtime or 0))  # fmt: skip

    def read(self, path: str) -> bytes:
        with translate_errors(f"read {path}"):
            with self._conn().open(self._p(path), "rb") as fh:
                fh.prefetch()
                return fh.read()

    def open_read(self, path: str) -> DropReader:
        """Copy the remote file, streamed, into an anonymous local temporary file and open that.

        Why a copy rather than reading the remote file as it is parsed: a batch is hashed before
        it is parsed, then parsed chunk by chunk with database commits in between, minutes for a
        big one. Reading it remotely twice would cost two transfers over the VPN and let the
        bytes parsed differ from the bytes checked; and an SFTP handle held open through those
        pauses dies with the session's timeouts. One pipelined transfer to local disk avoids all
        three. The temporary file has no name (nothing is left behind by a crash) and memory
        stays bounded by paramiko's prefetch window.
        """
        with translate_errors(f"read {path}"):
            if self._staging_dir is not None:
                Path(self._staging_dir).mkdir(parents=True, exist_ok=True)
            spool = tempfile.TemporaryFile(dir=self._staging_dir)
            try:
                self._conn().getfo(self._p(path), spool, max_concurrent_prefetch_requests=64)
                spool.seek(0)
            except BaseException:
                spool.close()
                raise
        return DropReader(spool, f"read {path} (local copy)")

    def write_atomic(self, path: str, data: bytes) -> None:
        sftp = self._conn()
        tmp = self._p(_tmp_name(path))
        with translate_errors(f"write {path}"):
            try:
                with sftp.open(tmp, "wb") as fh:
                    fh.set_pipelined(True)
                    fh.write(data)
                    fh.flush()
                # SFTP has no portable fsync; the server has the bytes once close() is
                # acknowledged, and the size check below catches a short write
                if sftp.stat(tmp).st_size != len(data):
                    raise OSError(errno.EIO, f"short write ({len(data)} bytes sent)", path)
                sftp.posix_rename(tmp, self._p(path))
            except BaseException:
                with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                    sftp.remove(tmp)
                raise

    def rename(self, src: str, dst: str) -> None:
        with translate_errors(f"rename {src} -> {dst}"):
            sftp = self._conn()
            # plain SFTP rename refuses an existing target, which keeps claims exclusive;
            # the explicit check makes the error precise
            try:
                sftp.stat(self._p(dst))
            except FileNotFoundError:
                pass
            else:
                raise FileExistsError(errno.EEXIST, "target exists", dst)
            sftp.rename(self._p(src), self._p(dst))

    def mkdir(self, path: str) -> None:
        with translate_errors(f"mkdir {path}"):
            sftp = self._conn()
            current = ""
            for part in PurePosixPath(path).parts:
                current = f"{current}/{part}" if current else part
                try:
                    sftp.stat(self._p(current))
                except FileNotFoundError:
                    sftp.mkdir(self._p(current))

    def remove(self, path: str) -> None:
        with translate_errors(f"remove {path}"):
            sftp = self._conn()
            try:
                a = sftp.stat(self._p(path))
            except FileNotFoundError:
                return
            if stat_mod.S_ISDIR(a.st_mode or 0):
                for child in sftp.listdir(self._p(path)):
                    self.remove(f"{path}/{child}")
                sftp.rmdir(self._p(path))
            else:
                sftp.remove(self._p(path))

    def close(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
        if self._client is not None:
            self._client.close()
        self._sftp = self._client = None
