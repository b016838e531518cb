"""Simulated agencies reachable only by file drops: 消防支队 XFZD (SFTP) and 规划分局 GHFJ (VPN share).

Each agency owns a drop root laid out as the hub's file-drop adapter expects (see
adapters/filedrop.py); it is written here independently, with the standard library, so the
tests prove two implementations agree on the drop rather than one implementation agreeing
with itself:

- XFZD 消防支队: served by a real paramiko SFTP server on 127.0.0.1 (key authentication).
- GHFJ 规划分局: a plain directory (the VPN share).

What each writes in its files (GBK CSV with Chinese headers, or XML with penalty codes and
万元) is its dialect, in sandbox.filedrop_dialects; ``DIALECTS`` and ``Dialect`` are
importable from here too. This module is the running agency around a dialect.

A poller thread picks up licence batches from ``to_agency/`` (only once their manifest is
there and every file matches it), records each licence with ``book.receive`` and writes
``receipts/<batch_id>.json`` (signed by ``receipts/<batch_id>.jws`` first, when it has a seal);
consumed batches move to ``agency_archive/``. ``publish()``
writes the penalties the book invented since the last publication as one batch in
``from_agency/``, manifest last; ``write_rows()`` streams a batch too big to render whole
(plain, or sign-only: a signed manifest over plain files).

Faults (``book.inject``): HALF_WRITTEN leaves the next penalty batch without its manifest
(or, with ``half_written="truncated"``, with a manifest over a truncated file; see
:meth:`FileDropAgency.complete_half_written`); TIMEOUT records the next licence batch but
writes no receipt; ERROR_500 refuses the next licence batch in its receipt; REPEAT
publishes the previous penalty batch's records again under a new batch id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import paramiko

from sandbox.core import AgencyBook, Fault, ReplayConflict
from sandbox.filedrop_dialects import DIALECTS, Dialect
from sandbox.sftp_server import SftpServer

__all__ = ["DIALECTS", "Dialect", "FileDropAgency", "RunningAgency", "start_filedrop_agency"]


LAYOUT = ("to_agency", "receipts", "from_agency", "agency_archive")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class _HashingSink(io.RawIOBase):
    """A binary file that also takes the SHA-256 and size of what goes through it."""

    def __init__(self, fh) -> None:
        self._fh, self.digest, self.size = fh, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        self._fh.write(data)
        return len(data)


@dataclass
class FileDropAgency:
    """One file-drop agency working on its local drop root."""

    dialect: Dialect
    root: Path
    book: AgencyBook
    poll_interval: float = 0.05
    auto_publish: bool = False
    half_written: str = "missing_manifest"  # or "truncated"
    seal: Any = None  # optional adapters.drop_manifest.Seal-shaped object (signed, maybe encrypted drops)
    published_seq: int = 0
    batches: int = 0
    pending_completion: list[tuple[Path, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_rows: list[dict[str, str]] = field(default_factory=list)

    def start(self) -> "FileDropAgency":
        for name in LAYOUT:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name=f"drop-agency-{self.dialect.code}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.poll_once()
            if self.auto_publish:
                self.publish()

    def _take_fault(self, *kinds: Fault) -> Fault | None:
        with self.book._lock:  # peek: a fault meant for the other direction stays queued
            if self.book.faults and self.book.faults[0] in kinds:
                return self.book.faults.popleft()
        return None

    # --- licences in ------------------------------------------------------------------
    def poll_once(self) -> None:
        with self._lock:
            for batch in sorted((self.root / "to_agency").iterdir()):
                if batch.is_dir() and not batch.name.startswith(".") and (batch / "manifest.json").exists():
                    self._consume(batch)

    def _consume(self, batch: Path) -> None:
        manifest_bytes = (batch / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
        rows: list[dict[str, str]] = []
        problem = None
        if self.seal is not None:
            sidecars = {n: (batch / n).read_bytes() for n in self.seal.sidecars if (batch / n).exists()}
            try:
                self.seal.verify_manifest(manifest_bytes, sidecars)
            except Exception as exc:  # noqa: BLE001 - any refusal is reported in the receipt
                problem = f"signature: {exc}"
        for item in manifest["files"] if problem is None else []:
            path = batch / Path(item["name"]).name
            data = path.read_bytes() if path.exists() else b""
            if len(data) < item["size"]:
                return  # not all there yet: look again on the next poll
            if hashlib.sha256(data).hexdigest() != item["sha256"]:
                problem = f"{item['name']}: SHA-256 does not match the manifest"
                break
            if self.seal is not None:
                data = self.seal.unseal_file(item["name"], data)
            rows.extend(self.dialect.parse(data, manifest["encoding"]))
        fault = self._take_fault(Fault.TIMEOUT, Fault.ERROR_500)
        receipt: dict[str, Any] = {"batch_id": manifest["batch_id"], "status": "accepted", "acks": [], "errors": []}
        if problem or fault == Fault.ERROR_500:
            receipt.update(status="rejected", reason=problem or "internal error, please resend")
        else:
            for row in rows:
                message_id = row.pop(self.dialect.message_id_field)
                payload = {k: v for k, v in row.items() if v != ""}  # an empty cell is an absent value
                try:
                    ack = self.book.receive(message_id, payload)
                except ReplayConflict as exc:
                    receipt["errors"].append({"message_id": message_id, "reason": str(exc)})
                    continue
                receipt["acks"].append({"message_id": message_id, "ack_id": ack.ack_id, "digest": ack.digest,
                                        "received_at": ack.received_at.isoformat(), "duplicate": ack.duplicate})  # fmt: skip
        archive = self.root / "agency_archive" / f"{batch.name}-{uuid.uuid4().hex[:6]}"
        batch.rename(archive)
        if fault != Fault.TIMEOUT:
            body = json.dumps(receipt, ensure_ascii=False, indent=1).encode("utf-8")
            signature = self.seal.sign_receipt(body) if self.seal is not None else None
            if signature is not None:  # before the receipt, which the hub takes as the batch's answer
                _write_atomic(self.root / "receipts" / f"{manifest['batch_id']}.jws", signature)
            _write_atomic(self.root / "receipts" / f"{manifest['batch_id']}.json", body)

    # --- penalties out ----------------------------------------------------------------
    def publish(self, limit: int = 500) -> str | None:
        """Write the penalties invented since the last publication as one batch; its id, or None."""
        with self._lock:
            if self._take_fault(Fault.REPEAT) and self._last_rows:
                rows = self._last_rows
            else:
                drafts = self.book.penalties_after(self.published_seq, limit)
                if not drafts:
                    return None
                uscc_field = self.dialect.subject_fields[1]
                held = {str(lic.get(uscc_field, "")): lic for lic in self.book.licences()}
                rows = [self.dialect.render_penalty(p, held.get(p.uscc, {})) for p in drafts]
                self.published_seq = drafts[-1].seq
            self._last_rows = rows
            return self.write_batch(self.dialect.render(rows), half_written=self._take_fault(Fault.HALF_WRITTEN) is not None)

    def write_batch(self, data: bytes, *, half_written: bool = False, file_name: str | None = None,
                    manifest_patch: dict[str, Any] | None = None) -> str:  # fmt: skip
        """Write raw bytes as a penalty batch (tests use it for hostile batches); returns the batch id."""
        self.batches += 1
        batch_id = f"{self.dialect.code}-{dt.datetime.now(dt.UTC):%Y%m%d}-{self.batches:06d}-{uuid.uuid4().hex[:4]}"
        name = file_name or f"penalties_{self.batches:06d}.{self.dialect.extension}"
        folder = self.root / "from_agency" / batch_id
        folder.mkdir()
        if self.seal is not None:
            name, data = self.seal.seal_file(name, data)
        manifest = {
            "version": 1, "batch_id": batch_id, "sequence": self.batches, "kind": "penalties",
            "created": dt.datetime.now(dt.UTC).isoformat(), "format": self.dialect.format,
            "encoding": self.dialect.encoding, "producer": self.dialect.code,
            "files": [{"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}],
            **(manifest_patch or {}),
        }  # fmt: skip
        manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
        if half_written and self.half_written == "truncated":
            _write_atomic(folder / name, data[: len(data) // 2])  # still being copied
            _write_atomic(folder / "manifest.json", manifest_bytes)
            self.pending_completion.append((folder / name, data))
        elif half_written:
            (folder / name).write_bytes(data)  # the manifest never came
            self.pending_completion.append((folder / "manifest.json", manifest_bytes))
        else:
            if "/" not in name:
                _write_atomic(folder / name, data)
            for sidecar, blob in (self.seal.sign_manifest(manifest_bytes) if self.seal else {}).items():
                _write_atomic(folder / sidecar, blob)
            _write_atomic(folder / "manifest.json", manifest_bytes)
        return batch_id

    def write_rows(self, rows: Iterable[dict[str, str]]) -> str:
        """Write penalty rows as one batch, row by row, never all in memory; returns the batch id.

        For batches too big to render whole (benchmarks: a million rows). The data file is hashed
        as it is written, synced and renamed into place; with a sign-only seal the manifest's
        signature follows; the manifest comes last, as always. An encrypting seal is refused.
        """
        if self.seal is not None and self.seal.encrypts:
            raise ValueError("an encrypted batch is encrypted whole: use write_batch")
        d = self.dialect
        self.batches += 1
        batch_id = f"{d.code}-{dt.datetime.now(dt.UTC):%Y%m%d}-{self.batches:06d}-{uuid.uuid4().hex[:4]}"
        name = f"penalties_{self.batches:06d}.{d.extension}"
        folder = self.root / "from_agency" / batch_id
        folder.mkdir()
        tmp = folder / f".{name}.tmp"
        with open(tmp, "wb") as fh:
            sink = _HashingSink(fh)
            d.stream(rows, sink)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / name)
        manifest = {
            "version": 1, "batch_id": batch_id, "sequence": self.batches, "kind": "penalties",
            "created": dt.datetime.now(dt.UTC).isoformat(), "format": d.format, "encoding": d.encoding,
            "producer": d.code, "files": [{"name": name, "size": sink.size, "sha256": sink.digest.hexdigest()}],
        }  # fmt: skip
        manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
        for sidecar, blob in (self.seal.sign_manifest(manifest_bytes) if self.seal else {}).items():
            _write_atomic(folder / sidecar, blob)
        _write_atomic(folder / "manifest.json", manifest_bytes)
        return batch_id

    def complete_half_written(self) -> None:
        """Finish the writes a HALF_WRITTEN fault left undone (the slow copy finally ends)."""
        while self.pending_completion:
            path, data = self.pending_completion.pop(0)
            _write_atomic(path, data)


@dataclass
class RunningAgency:
    """A started file-drop agency: its drop root, how the hub reaches it, and how to stop it."""

    code: str
    endpoint: str
    book: AgencyBook
    agency: FileDropAgency
    root: Path
    host_key: str | None = None  # SFTP: the server's public key line (the hub pins it)
    client_key_file: Path | None = None  # SFTP: the hub's private key, when generated here
    server: SftpServer | None = None

    def publish(self, limit: int = 500) -> str | None:
        return self.agency.publish(limit)

    def transport_overrides(self, transport: dict[str, Any] | None = None) -> dict[str, Any]:
        """load_registry overrides for this agency: the loopback endpoint and, for SFTP, the pinned keys."""
        table = dict(transport or {})
        if self.host_key:
            table["host_key"] = self.host_key
        if self.client_key_file:
            table["key_file"] = str(self.client_key_file)
        return {"endpoint": self.endpoint, "transport": table}

    def stop(self) -> None:
        self.agency.stop()
        if self.server:
            self.server.stop()


def start_filedrop_agency(
    code: str,
    *,
    root: Path,
    book: AgencyBook | None = None,
    poll_interval: float = 0.05,
    auto_publish: bool = False,
    half_written: str = "missing_manifest",
    seal: Any = None,
    hub_public_key: paramiko.PKey | None = None,
    key_dir: Path | None = None,
    username: str = "hub",
) -> RunningAgency:
    """Start XFZD or GHFJ on ``root`` (created if missing).

    Args:
        code: ``XFZD`` (GBK CSV over SFTP) or ``GHFJ`` (XML in a directory).
        root: the agency's drop root.
        book: its state; a fresh AgencyBook in its dialect by default.
        poll_interval: seconds between looks into ``to_agency/``.
        auto_publish: publish new penalties after every poll.
        half_written: how a HALF_WRITTEN fault shows: ``missing_manifest`` or ``truncated``.
        seal: signs (and encrypts) its penalty batches and checks (and decrypts) the hub's licence
            batches (e.g. ``certs.sealer.DropSeal.from_pki(pki, own=code, peer="hub")``, with
            ``encrypt=False`` for sign-only drops); none by default.
        hub_public_key: SFTP: the hub's public key; when None a key pair is generated and the
            private key written (mode 0600) to ``key_dir`` (default: next to ``root``).
        username: SFTP: the user the hub logs in as.
    """
    dialect = DIALECTS[code]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    book = book or AgencyBook(code=code, name=dialect.name, uscc=dialect.uscc, subject_fields=dialect.subject_fields)
    agency = FileDropAgency(dialect, root, book, poll_interval=poll_interval, auto_publish=auto_publish,
                            half_written=half_written, seal=seal).start()  # fmt: skip
    if dialect.transport == "dir":
        return RunningAgency(code, root.resolve().as_uri(), book, agency, root)
    client_key_file = None
    if hub_public_key is None:
        key = paramiko.ECDSAKey.generate(bits=256)
        key_dir = Path(key_dir or root.parent / f"{code.lower()}-hub-key")
        key_dir.mkdir(parents=True, exist_ok=True)
        client_key_file = key_dir / "id_ecdsa"
        key.write_private_key_file(str(client_key_file))
        os.chmod(client_key_file, 0o600)
        hub_public_key = key
    server = SftpServer(root, host_key=paramiko.ECDSAKey.generate(bits=256), authorized_key=hub_public_key,
                        username=username).start()  # fmt: skip
    endpoint = f"sftp://{username}@127.0.0.1:{server.port}/"
    return RunningAgency(code, endpoint, book, agency, root, server.host_key_line, client_key_file, server)
