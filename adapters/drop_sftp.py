"""The file-drop transport for an SFTP server (paramiko), with key authentication.

SFTP never trusts an unknown server: the expected host public key comes from the agency's
data file and paramiko's ``RejectPolicy`` refuses anything else. The connection is opened on
first use and again after it drops. OS and paramiko errors leave as hub errors through
adapters.drop_transport.translate_errors.
"""

from __future__ import annotations

import contextlib
import errno
import stat as stat_mod
import tempfile
from pathlib import Path, PurePosixPath

import paramiko

from adapters.drop_transport import DropEntry, DropReader, tmp_name, translate_errors

__all__ = ["SftpTransport"]


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
        tmp = self._p(tmp_name(path))
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
