"""The file-drop transport for a local or mounted directory: the VPN share.

A write counts only once it is durable: the data is synced, renamed into place, and the
directory entry synced too. A rename refuses an existing target, which keeps claims
exclusive. OS errors leave as hub errors through adapters.drop_transport.translate_errors.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
from pathlib import Path, PurePosixPath

from adapters.drop_transport import DropEntry, DropReader, tmp_name, translate_errors

__all__ = ["LocalTransport"]


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
        tmp = self._p(tmp_name(path))
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
