"""File-drop adapter: agencies reachable only through a VPN share (a mounted directory) or SFTP.

Layout of one agency's drop root (the same on a share and over SFTP)::

    <root>/
      to_agency/<batch_id>/     hub → agency: licence batches (data file(s), then manifest.json)
      receipts/<batch_id>.json  agency → hub: one receipt per licence batch (kept as evidence)
      from_agency/<batch_id>/   agency → hub: penalty batches (data file(s), then manifest.json)
      processing/<batch_id>@<claimed-epoch>-<token>/   a hub worker's claim on an inbound batch
      processed/<batch_id>/     inbound batches the hub has committed
      failed/<batch_id>/ and failed/<batch_id>.error   refused inbound batches and why

A batch is a directory of data file(s) and ``manifest.json`` (adapters.drop_manifest), which
is written LAST: every file is written under a hidden temporary name, flushed, synced and
renamed; a batch without its manifest is not there yet.

Outbound (``deliver``): one batch per call, each record carrying its message id in the
``message_id_field`` column. The adapter then polls for ``receipts/<batch_id>.json``::

    {"batch_id": "...", "status": "accepted" | "rejected", "reason": "...",
     "acks": [{"message_id", "ack_id", "received_at", "digest", "duplicate"}],
     "errors": [{"message_id", "reason"}]}

No receipt within ``receipt_timeout`` → TransientError. A resend writes a NEW batch with the
same message ids; the agency deduplicates by message id and acknowledges duplicates.

Inbound (``fetch``): returns ONE batch per call, the ready batch with the lowest sequence.
Ready = manifest present and every listed file at its listed size (shorter = still being
written; after ``incomplete_grace`` seconds it counts as corrupt). The batch is claimed by
renaming its directory into processing/ (two workers cannot both win a rename), checked
(size, SHA-256, seal), parsed, and returned as a Page with ``batch_id`` set and
``next_cursor.position`` = the batch sequence (never below ``after``: a late batch with a
lower sequence is still loaded, since the drop itself, not the cursor, holds what is new;
``more`` says another ready batch is waiting). A refused batch is moved to failed/ with an
``.error`` file and reported in ``Page.rejected`` (``batch_id`` None, no records).

Loaded once, ever: the hub records ``page.batch_id`` in the same transaction as the
records. If it already knows the id it stores nothing and still calls ``acknowledge``, which
moves the batch to processed/. Optionally the hub passes ``is_loaded`` to the constructor
and such batches are moved to processed/ without being returned at all.
A claim older than ``claim_stale_after`` (its worker died) is re-claimed by rename.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from adapters.base import Cursor, Health, InboundRecord, OutboundMessage, Page, Receipt, Rejected
from adapters.drop_config import FileDropConfig, make_transport
from adapters.drop_formats import decode_records, encode_records
from adapters.drop_manifest import MANIFEST_NAME, Manifest, NoSeal, Seal, check_batch_id, file_entry, verify_file
from adapters.drop_transport import DropConflict, DropFileMissing, DropTransport
from contracts.validation import describe_errors
from hub.errors import ConfigurationError, FatalError, HubError, RefusedInput, TransientError

__all__ = ["FileDropAdapter", "FileDropConfig", "from_spec", "TO_AGENCY", "RECEIPTS", "FROM_AGENCY",
           "PROCESSING", "PROCESSED", "FAILED"]  # fmt: skip

log = logging.getLogger(__name__)

TO_AGENCY, RECEIPTS, FROM_AGENCY = "to_agency", "receipts", "from_agency"
PROCESSING, PROCESSED, FAILED = "processing", "processed", "failed"


@dataclass(frozen=True)
class _Candidate:
    sequence: int
    batch_id: str
    path: str  # where the batch directory is now (from_agency/… or processing/…)
    problem: str | None = None  # set: claim it only to fail it


class FileDropAdapter:
    """Delivers licence batches to, and collects penalty batches from, one agency's drop root.

    Args:
        config: the agency's validated FileDropConfig.
        transport: a LocalTransport or SftpTransport rooted at the drop root.
        seal: signs/encrypts outbound and verifies/decrypts inbound batches (default: none).
        is_loaded: optional; True for batch ids the hub has loaded already (they are moved
            to processed/ unread).
    """

    def __init__(
        self,
        config: FileDropConfig,
        transport: DropTransport,
        *,
        seal: Seal | None = None,
        is_loaded: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.code = config.code
        self.transport = transport
        self.seal = seal or NoSeal()
        self.is_loaded = is_loaded
        self._claims: dict[str, str] = {}  # batch id -> processing/ path, until acknowledged
        self._dirs_ready = False

    # --- outbound -------------------------------------------------------------------------
    def deliver(self, messages: Sequence[OutboundMessage]) -> list[Receipt]:
        """Write one licence batch, wait for the agency's receipt, return a receipt per message."""
        if not messages:
            return []
        cfg = self.config
        now = dt.datetime.now(dt.UTC)
        batch_id = f"HUB-{cfg.code}-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        records = []
        for message in messages:
            if cfg.message_id_field in message.payload:
                raise ConfigurationError(f"agency {cfg.code}: payload uses the message id field {cfg.message_id_field}")
            records.append({cfg.message_id_field: message.message_id, **message.payload})
        fields = [cfg.message_id_field, *cfg.csv_fields]
        data = encode_records(records, cfg.format, cfg.encoding, fields=fields,
                              xml_root=cfg.xml_root, xml_record=cfg.xml_record)  # fmt: skip
        stored_name, stored = self.seal.seal_file(f"{cfg.data_file}.{cfg.format}", data)
        manifest = Manifest(
            batch_id=batch_id, sequence=time.time_ns() // 1000, created=now, kind="licences",
            format=cfg.format, encoding=cfg.encoding, producer="HUB", record_count=len(records),
            files=(file_entry(stored_name, stored),),
        )  # fmt: skip
        folder = f"{TO_AGENCY}/{batch_id}"
        self.transport.mkdir(folder)
        self.transport.write_atomic(f"{folder}/{stored_name}", stored)
        manifest_bytes = manifest.to_bytes()
        for name, blob in self.seal.sign_manifest(manifest_bytes).items():
            self.transport.write_atomic(f"{folder}/{name}", blob)
        self.transport.write_atomic(f"{folder}/{MANIFEST_NAME}", manifest_bytes)  # the done marker, last
        log.info("agency %s: wrote licence batch %s (%d messages)", cfg.code, batch_id, len(messages))
        return self._receipts(batch_id, messages, self._await_receipt(batch_id))

    def _await_receipt(self, batch_id: str) -> dict:
        path = f"{RECEIPTS}/{batch_id}.json"
        deadline = time.monotonic() + self.config.receipt_timeout
        while True:
            if self.transport.stat(path) is not None:
                try:
                    receipt = json.loads(self.transport.read(path))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise FatalError(f"agency {self.code}: receipt {path} is not JSON: {exc}") from exc
                if not isinstance(receipt, dict) or receipt.get("batch_id") != batch_id:
                    raise FatalError(f"agency {self.code}: receipt {path} is not for batch {batch_id}")
                return receipt
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"agency {self.code}: no receipt for batch {batch_id} within {self.config.receipt_timeout:g}s",
                    batch_id=batch_id,
                )
            time.sleep(self.config.poll_interval)

    def _receipts(self, batch_id: str, messages: Sequence[OutboundMessage], receipt: dict) -> list[Receipt]:
        if receipt.get("status") == "rejected":
            # the agency found the batch damaged; writing it again may well succeed
            raise TransientError(f"agency {self.code} rejected batch {batch_id}: {receipt.get('reason')}")
        errors = {e.get("message_id"): e.get("reason") for e in receipt.get("errors") or []}
        if errors:
            text = "; ".join(f"{mid}: {why}" for mid, why in errors.items())
            raise FatalError(f"agency {self.code} refused messages in batch {batch_id}: {text}", refused=errors)
        acks = {a.get("message_id"): a for a in receipt.get("acks") or []}
        out = []
        for message in messages:
            ack = acks.get(message.message_id)
            if ack is None:
                raise FatalError(f"agency {self.code}: receipt for batch {batch_id} lacks message {message.message_id}")
            try:
                out.append(Receipt(
                    message_id=message.message_id, ack_id=str(ack["ack_id"]),
                    received_at=dt.datetime.fromisoformat(ack["received_at"]),
                    digest=str(ack["digest"]), duplicate=bool(ack.get("duplicate", False)),
                ))  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise FatalError(f"agency {self.code}: malformed ack in receipt {batch_id}: {exc}") from exc
        return out

    # --- inbound --------------------------------------------------------------------------
    def fetch(self, after: Cursor) -> Page:
        """Claim, check and parse the next ready penalty batch (see the module docstring)."""
        self._ensure_dirs()
        candidates = self._candidates()
        for index, candidate in enumerate(candidates):
            claimed = self._claim(candidate)
            if claimed is None:
                continue  # another worker was faster
            page = self._load(claimed, candidate, after, more=index + 1 < len(candidates))
            if page is not None:
                return page
            # None: already loaded (and now moved to processed/), so go on down the list we have
        return Page(records=[], next_cursor=after, more=False)

    def _ensure_dirs(self) -> None:
        if not self._dirs_ready:
            for folder in (FROM_AGENCY, PROCESSING, PROCESSED, FAILED):
                self.transport.mkdir(folder)
            self._dirs_ready = True

    def _candidates(self) -> list[_Candidate]:
        found: list[_Candidate] = []
        now = time.time()
        for batch_id, path in list(self._claims.items()):  # ours, fetched but never acknowledged
            if self.transport.stat(path) is not None:
                found.append(_Candidate(-1, batch_id, path))
            else:
                self._claims.pop(batch_id)
        for entry in self.transport.list(PROCESSING):
            batch_id, _, stamp = entry.name.partition("@")
            claimed_at = _claim_time(stamp)
            if entry.is_dir and claimed_at is not None and now - claimed_at > self.config.claim_stale_after:
                if batch_id not in self._claims:
                    found.append(_Candidate(-1, batch_id, f"{PROCESSING}/{entry.name}"))
        for entry in self.transport.list(FROM_AGENCY):
            if entry.is_dir and not entry.name.startswith("."):
                candidate = self._readiness(entry.name, now)
                if candidate is not None:
                    found.append(candidate)
        return sorted(found, key=lambda c: (c.sequence, c.batch_id))

    def _readiness(self, name: str, now: float) -> _Candidate | None:
        """A candidate if the batch is complete (or hopeless), None while it is still being written."""
        folder = f"{FROM_AGENCY}/{name}"
        try:
            check_batch_id(name)
        except ValueError as exc:
            return _Candidate(-1, name, folder, problem=str(exc))
        manifest_entry = self.transport.stat(f"{folder}/{MANIFEST_NAME}")
        if manifest_entry is None:
            return None
        limit = self.config.max_file_bytes
        if manifest_entry.size > limit:
            return _Candidate(-1, name, folder, problem=f"{folder}/{MANIFEST_NAME}: {manifest_entry.size} bytes "
                                                        f"is over the {limit} byte limit")  # fmt: skip
        try:
            manifest = Manifest.from_bytes(self.transport.read(f"{folder}/{MANIFEST_NAME}"), where=folder)
        except RefusedInput as exc:
            return _Candidate(-1, name, folder, problem=str(exc))
        except DropFileMissing:
            return None
        overdue = now - manifest_entry.mtime > self.config.incomplete_grace
        for item in manifest.files:
            if item.size > limit:  # refused before anything of it is read, and without waiting for it
                return _Candidate(manifest.sequence, name, folder,
                                  problem=f"{folder}/{item.name}: {item.size} bytes is over the {limit} byte limit")  # fmt: skip
            stored = self.transport.stat(f"{folder}/{item.name}")
            if stored is None or stored.size < item.size:
                if not overdue:
                    return None
                why = "missing" if stored is None else f"{stored.size} of {item.size} bytes"
                return _Candidate(manifest.sequence, name, folder,
                                  problem=f"{folder}/{item.name}: {why} after {self.config.incomplete_grace:g}s")  # fmt: skip
        return _Candidate(manifest.sequence, name, folder)

    def _claim(self, candidate: _Candidate) -> str | None:
        token = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        if candidate.path.startswith(PROCESSING) and self._claims.get(candidate.batch_id) == candidate.path:
            return candidate.path  # already ours
        target = f"{PROCESSING}/{candidate.batch_id}@{token}"
        try:
            self.transport.rename(candidate.path, target)
        except (DropFileMissing, DropConflict):
            return None
        self._claims[candidate.batch_id] = target
        return target

    def _load(self, claimed: str, candidate: _Candidate, after: Cursor, more: bool) -> Page | None:
        batch_id = candidate.batch_id
        sequence = candidate.sequence
        try:
            if candidate.problem:
                raise RefusedInput(candidate.problem)
            manifest, records = self._read_batch(claimed, batch_id)
            sequence = manifest.sequence
        except RefusedInput as exc:
            self._fail(claimed, batch_id, str(exc))
            cursor = Cursor(max(after.position, sequence), after.token)
            return Page(records=[], next_cursor=cursor, more=more,
                        rejected=[Rejected(ref=batch_id, reason=str(exc))])  # fmt: skip
        if self.is_loaded is not None and self.is_loaded(batch_id):
            log.info("agency %s: batch %s was loaded before; moving it to processed/", self.code, batch_id)
            self._finish(batch_id)
            return None
        ref_field = self.config.record_id_field
        items = [
            InboundRecord(native=record, raw=json.dumps(record, ensure_ascii=False),
                          ref=(record.get(ref_field) or None) if ref_field else None)
            for record in records
        ]  # fmt: skip
        cursor = Cursor(max(after.position, sequence), batch_id)
        return Page(records=items, next_cursor=cursor, more=more, batch_id=batch_id)

    def _read_batch(self, folder: str, batch_id: str) -> tuple[Manifest, list[dict[str, str]]]:
        manifest_bytes = self.transport.read(f"{folder}/{MANIFEST_NAME}")
        manifest = Manifest.from_bytes(manifest_bytes, where=batch_id)
        if manifest.batch_id != batch_id:
            raise RefusedInput(f"{batch_id}: manifest names batch {manifest.batch_id}")
        if manifest.kind != "penalties" or manifest.format != self.config.format:
            raise RefusedInput(f"{batch_id}: expected {self.config.format} penalties, "
                               f"manifest says {manifest.format} {manifest.kind}")  # fmt: skip
        present = {e.name for e in self.transport.list(folder)}
        sidecars = {n: self.transport.read(f"{folder}/{n}") for n in self.seal.sidecars if n in present}
        self.seal.verify_manifest(manifest_bytes, sidecars)
        records: list[dict[str, str]] = []
        for item in manifest.files:
            if item.name not in present:
                raise RefusedInput(f"{batch_id}/{item.name}: listed in the manifest but missing")
            stored = self.transport.read(f"{folder}/{item.name}")
            verify_file(item, stored, where=batch_id)
            plain = self.seal.unseal_file(item.name, stored)
            records.extend(decode_records(plain, manifest.format, manifest.encoding, name=f"{batch_id}/{item.name}",
                                          xml_root=self.config.xml_root, xml_record=self.config.xml_record))  # fmt: skip
        return manifest, records

    def _fail(self, claimed: str, batch_id: str, reason: str) -> None:
        log.warning("agency %s: batch %s refused: %s", self.code, batch_id, reason)
        self._claims.pop(batch_id, None)
        target = self._free(FAILED, batch_id, claimed)
        self.transport.rename(claimed, f"{FAILED}/{target}")
        self.transport.write_atomic(f"{FAILED}/{target}.error", f"{reason}\n".encode("utf-8"))

    def _free(self, folder: str, batch_id: str, claimed: str) -> str:
        """``batch_id`` if nothing in ``folder`` has that name yet, else the unique claim name."""
        if self.transport.stat(f"{folder}/{batch_id}") is None:
            return batch_id
        return claimed.rsplit("/", 1)[-1]

    def _finish(self, batch_id: str) -> None:
        claimed = self._claims.pop(batch_id, None)
        if claimed is None:  # claimed by another adapter instance, e.g. before a restart
            claimed = next((f"{PROCESSING}/{e.name}" for e in self.transport.list(PROCESSING)
                            if e.name.partition("@")[0] == batch_id), None)  # fmt: skip
        if claimed is None:
            log.warning("agency %s: batch %s is no longer claimed; nothing to move", self.code, batch_id)
            return
        self.transport.rename(claimed, f"{PROCESSED}/{self._free(PROCESSED, batch_id, claimed)}")

    def acknowledge(self, page: Page) -> None:
        """The hub committed ``page``: move its batch to processed/ (no-op for empty or refused pages)."""
        if page.batch_id:
            self._finish(page.batch_id)

    # --- the rest -------------------------------------------------------------------------
    def probe(self) -> Health:
        started = time.monotonic()
        try:
            self.transport.list("")
        except HubError as exc:
            return Health(ok=False, detail=str(exc), latency_ms=(time.monotonic() - started) * 1000)
        return Health(ok=True, detail=f"{self.config.scheme} drop reachable",
                      latency_ms=(time.monotonic() - started) * 1000)  # fmt: skip

    def close(self) -> None:
        self.transport.close()


def _claim_time(stamp: str) -> float | None:
    try:
        return float(stamp.split("-", 1)[0])
    except ValueError:
        return None


def _seal_from_context(config: FileDropConfig, context) -> Seal:
    tls = context.tls
    files = {"signing_cert": tls.hub_signing_cert, "signing_key": tls.hub_signing_key,
             "trusted_ca": tls.ca, "peer_cert": tls.agency_cert}  # fmt: skip
    missing = sorted(k for k, v in files.items() if v is None)
    if missing:
        raise ConfigurationError(f"agency {config.code}: sealed drops need TLS files: {', '.join(missing)}")
    from certs.sealer import DropSeal  # only sealed agencies need the JOSE stack

    return DropSeal.from_files(**files)


def from_spec(spec, context, *, seal: Seal | None = None, is_loaded: Callable[[str], bool] | None = None):
    """Build the adapter from an AgencySpec (endpoint + ``[filedrop]`` table) and an AdapterContext.

    With ``sealed = true`` in ``[filedrop]`` and no explicit ``seal``, the seal is built from
    ``context.tls`` (hub signing cert/key, CA, the agency's signing certificate).
    """
    data = {"code": spec.code, "endpoint": spec.endpoint, "record_id_field": spec.violation_mapping.record_id,
            "connect_timeout": context.connect_timeout, "read_timeout": context.read_timeout, **spec.transport}  # fmt: skip
    try:
        config = FileDropConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"agency {spec.code}: [filedrop] {describe_errors(exc)}") from exc
    if seal is None and config.sealed:
        seal = _seal_from_context(config, context)
    return FileDropAdapter(config, make_transport(config, secret=context.secret), seal=seal, is_loaded=is_loaded)
