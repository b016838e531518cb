"""A real SFTP server (paramiko) on 127.0.0.1 serving one local directory, for sandbox agencies.

Key authentication only, against one authorised public key (the hub's). The served
directory appears as ``/`` to the client; no path can leave it. ``rename`` refuses an
existing target as SFTP v3 requires; ``posix-rename@openssh.com`` replaces it.
"""

from __future__ import annotations

import contextlib
import os
import logging
import socket
import threading
from pathlib import Path

import paramiko
from paramiko.sftp import SFTP_FAILURE, SFTP_OK, SFTP_PERMISSION_DENIED

__all__ = ["SftpServer"]


logging.getLogger("sandbox.sftp").addHandler(logging.NullHandler())


class _Auth(paramiko.ServerInterface):
    def __init__(self, username: str, authorized: paramiko.PKey) -> None:
        self.username, self.authorized = username, authorized

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.username and key.get_base64() == self.authorized.get_base64():
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED if kind == "session" else paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED


class _Handle(paramiko.SFTPHandle):
    def stat(self):
        try:
            return paramiko.SFTPAttributes.from_stat(os.fstat(self.readfile.fileno()))
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)


class _RootedSFTP(paramiko.SFTPServerInterface):
    """Maps client paths under ``root``; refuses anything that would resolve outside it."""

    def __init__(self, server, *args, root: str, **kwargs) -> None:
        super().__init__(server, *args, **kwargs)
        self.root = os.path.realpath(root)

    def _real(self, path: str) -> str:
        real = os.path.realpath(os.path.join(self.root, self.canonicalize(path).lstrip("/")))
        if real != self.root and not real.startswith(self.root + os.sep):
            raise PermissionError(path)
        return real

    def _run(self, fn, *args):
        try:
            return fn(*args)
        except PermissionError:
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return paramiko.SFTPServer.convert_errno(exc.errno)

    def list_folder(self, path):
        def run():
            real = self._real(path)
            out = []
            for name in os.listdir(real):
                attr = paramiko.SFTPAttributes.from_stat(os.lstat(os.path.join(real, name)))
                attr.filename = name
                out.append(attr)
            return out

        return self._run(run)

    def stat(self, path):
        return self._run(lambda: paramiko.SFTPAttributes.from_stat(os.stat(self._real(path))))

    lstat = stat

    def open(self, path, flags, attr):
        def run():
            fd = os.open(self._real(path), flags | getattr(os, "O_BINARY", 0), 0o644)
            if flags & os.O_WRONLY:
                mode = "ab" if flags & os.O_APPEND else "wb"
            elif flags & os.O_RDWR:
                mode = "a+b" if flags & os.O_APPEND else "r+b"
            else:
                mode = "rb"
            handle = _Handle(flags)
            fh = os.fdopen(fd, mode)
            handle.readfile = handle.writefile = fh
            return handle

        return self._run(run)

    def remove(self, path):
        return self._run(lambda: (os.remove(self._real(path)), SFTP_OK)[1])

    def rename(self, oldpath, newpath):
        def run():
            target = self._real(newpath)
            if os.path.lexists(target):
                return SFTP_FAILURE
            os.rename(self._real(oldpath), target)
            return SFTP_OK

        return self._run(run)

    def posix_rename(self, oldpath, newpath):
        return self._run(lambda: (os.replace(self._real(oldpath), self._real(newpath)), SFTP_OK)[1])

    def mkdir(self, path, attr):
        return self._run(lambda: (os.mkdir(self._real(path)), SFTP_OK)[1])

    def rmdir(self, path):
        return self._run(lambda: (os.rmdir(self._real(path)), SFTP_OK)[1])

    def chattr(self, path, attr):
        return SFTP_OK


class SftpServer:
    """Serve ``root`` over SFTP on 127.0.0.1 (ephemeral port) until :meth:`stop`.

    Args:
        root: the directory served as ``/``.
        host_key: the server's private host key.
        authorized_key: the one client public key allowed in.
        username: the one user name allowed in.
    """

    def __init__(self, root: Path, *, host_key: paramiko.PKey, authorized_key: paramiko.PKey, username: str = "hub"):
        self.root, self.host_key, self.authorized_key, self.username = Path(root), host_key, authorized_key, username
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self._stop = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, name=f"sftp-{self.port}", daemon=True)

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def host_key_line(self) -> str:
        """The server's public key as an OpenSSH line, for the hub's ``host_key`` setting."""
        return f"{self.host_key.get_name()} {self.host_key.get_base64()}"

    def start(self) -> "SftpServer":
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            transport = paramiko.Transport(conn)
            # A client hanging up is routine for a server; keep paramiko's ERROR lines off stderr.
            transport.set_log_channel("sandbox.sftp.transport")
            transport.add_server_key(self.host_key)
            transport.set_subsystem_handler("sftp", paramiko.SFTPServer, _RootedSFTP, root=str(self.root))
            self._transports = [t for t in self._transports if t.is_alive()] + [transport]
            try:
                transport.start_server(server=_Auth(self.username, self.authorized_key))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        for transport in self._transports:
            with contextlib.suppress(Exception):
                transport.close()
        for transport in self._transports:
            transport.join(timeout=5)
