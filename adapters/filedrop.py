"""File-drop adapter: agencies reachable only through a VPN share (a mounted directory) or SFTP.

Layout of one agency's drop root (the same on a share and over SFTP)::

    <root>/
      to_agency/<batch_id>/     hub → agency: licence batches (data file(s), then manifest.json)
      receipts/<batch_id>.json  agency → hub: one receipt per licence batch (kept as evidence),
                                with <batch_id>.jws beside it when the drop is signed
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

When the drop is signed (``seal``), the agency writes ``receipts/<batch_id>.jws``: a JWS over
the receipt's exact bytes, typed ``receipt+json``, by its signing certificate. A receipt is
waited on until its .jws is there too (or ``receipt_timeout`` runs out); one without it, or that
it does not sign, is refused (FatalError): no delivery of the batch counts as delivered, and the
push sends them again as it does after any failed attempt. Each Receipt of the batch carries
the verified JWS (``agency_signature``) for the hub to keep.
Messages refused one by one (the receipt's ``errors``, or a value the agency's encoding cannot
hold, found before anything is written) raise a FatalError whose ``refused`` names them: the push
fails those alone and sends the rest of the batch again. No receipt within ``receipt_timeout`` →
TransientError. A resend writes a NEW batch with the
same message ids; the agency deduplicates by message id and acknowledges duplicates.

Inbound (``fetch``): the ready batch with the lowest sequence, ``chunk_records`` records per
call. Ready = manifest present and every listed file at its listed size (shorter = still being
written; after ``incomplete_grace`` seconds it counts as corrupt). The batch is claimed by
renaming its directory into processing/ (two workers cannot both win a rename) and checked
whole (size, SHA-256, seal, a dry parse: adapters.drop_reader) before its first page. Each page
has ``batch_id`` set, ``batch_offset`` (records before it) and ``next_cursor.position`` = the
batch sequence (never below ``after``: a late batch with a lower sequence is still loaded, since
the drop itself, not the cursor, holds what is new). ``next_cursor.token`` is
``<batch_id>:<records so far>`` until the last page (``batch_complete``), then the batch id
alone; ``more`` says another page or batch is waiting. Given a token with an offset, ``fetch``
goes on with that batch (checked again if this adapter did not hand out the pages before), so
a worker that died between pages is resumed after the last page the hub committed. A refused
batch is moved to failed/ with an ``.error`` file and reported in ``Page.rejected``
(``batch_id`` None, no records).

Loaded once, ever: the hub records ``page.batch_id`` in the same transaction as the batch's
last page. If it already knows the id it stores nothing and still calls ``acknowledge``, which
moves the batch to processed/ after its last page. Batches the cursor or ``is_loaded`` (an
optional constructor argument) names as loaded are moved to processed/ without being read.
A claim older than ``claim_stale_after`` (its worker died) is re-claimed by rename
(adapters.drop_claims).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from adapters.base import Cursor, Health, OutboundMessage, Page, Receipt, Rejected
from adapters.drop_claims import FAILED, FROM_AGENCY, PROCESSED, PROCESSING, Candidate, DropClaims
from adapters.drop_config import FileDropConfig, make_transport
from adapters.drop_formats import encode_records
from adapters.drop_manifest import MANIFEST_NAME, Manifest, NoSeal, Seal, file_entry
from adapters.drop_reader import BatchReader, in_progress, open_batch, read_manifest
from adapters.drop_transport import DropTransport
from contracts.validation import describe_errors
from hub.errors import ConfigurationError, FatalError, HubError, RefusedInput, TransientError

__all__ = ["FileDropAdapter", "FileDropConfig", "from_spec", "TO_AGENCY", "RECEIPTS", "RECEIPT_SIGNATURE",
           "FROM_AGENCY", "PROCESSING", "PROCESSED", "FAILED"]  # fmt: skip

log = logging.getLogger(__name__)

TO_AGENCY, RECEIPTS = "to_agency", "receipts"
RECEIPT_SIGNATURE = ".jws"  # receipts/<batch_id>.jws, written before the receipt when the drop is signed


def _unwritable(records: Sequence[dict], messages: Sequence[OutboundMessage], encoding: str) -> dict[str, str]:
    """Each message with a value the agency's encoding cannot hold, and which field and characters."""
    found = {}
    for record, message in zip(records, messages, strict=True):
        for name, value in record.items():
            try:
                str(value).encode(encoding)
            except UnicodeEncodeError as exc:
                found[message.message_id] = f"{name} {exc.object[exc.start:exc.end]!r} cannot be written in {encoding}"
                break
    return found


class FileDropAdapter:
    """Delivers licence batches to, and collects penalty batches from, one agency's drop root.

    Args:
        config: the agency's validated FileDropConfig.
        transport: a LocalTransport or SftpTransport rooted at the drop root.
        seal: signs (and encrypts) outbound and verifies (and decrypts) inbound batches (default: none).
        is_loaded: optional; True for batch ids the hub has loaded already (they are moved
            to processed/ unread).
    """

    read_ahead = False  # the next batch is found by listing the inbox once the last one has moved out

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
        self.receipt_wait = config.receipt_timeout  # the agency answers when it has loaded the batch
        self.transport = transport
        self.seal = seal or NoSeal()
        self.is_loaded = is_loaded
        self.claims = DropClaims(transport, config)
        self._reader: BatchReader | None = None  # the batch being handed out, chunk by chunk

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
        try:
            data = encode_records(records, cfg.format, cfg.encoding, fields=fields,
                                  xml_root=cfg.xml_root, xml_record=cfg.xml_record)  # fmt: skip
        except ConfigurationError as exc:
            unwritable = _unwritable(records, messages, cfg.encoding)
            if not unwritable:
                raise
            # a rare character in one company's name must not hold back the batch's other licences
            raise FatalError(f"agency {cfg.code}: {len(unwritable)} licence(s) cannot be written in {cfg.encoding}: "
                             + "; ".join(f"{mid}: {why}" for mid, why in unwritable.items()), refused=unwritable) from exc
        stored_name, stored = self.seal.seal_file(f"{cfg.data_file}.{cfg.format}", data)
        manifest = Manifest(
            batch_id=batch_id, sequence=time.time_ns() // 1000, created=now, kind="licences",
            format=cfg.format, encoding=cfg.encoding, producer="HUB", record_count=len(records),
            files=(file_entry(stored_name, stored),),
        )  # fmt: skip
        folder = f"{TO_AGENCY}/{batch_id}"
        manifest_bytes = manifest.to_bytes()
        self.transport.mkdir(folder)
        try:
            self.transport.write_atomic(f"{folder}/{stored_name}", stored)
            for name, blob in self.seal.sign_manifest(manifest_bytes).items():
                self.transport.write_atomic(f"{folder}/{name}", blob)
        except HubError:
            # without its manifest the agency never takes it, and a resend writes a new batch
            with contextlib.suppress(HubError):
                self.transport.remove(folder)
            raise
        # the done marker, last, and outside the clean-up: a manifest write that timed out may have
        # landed, and the agency may be reading the batch already
        self.transport.write_atomic(f"{folder}/{MANIFEST_NAME}", manifest_bytes)
        log.info("agency %s: wrote licence batch %s (%d messages)", cfg.code, batch_id, len(messages))
        return self._receipts(batch_id, messages, *self._await_receipt(batch_id))

    def _await_receipt(self, batch_id: str) -> tuple[dict, str | None]:
        """The batch's receipt and the verified signature over it (None when the drop is not signed)."""
        path = f"{RECEIPTS}/{batch_id}.json"
        deadline = time.monotonic() + self.config.receipt_timeout
        raw: bytes | None = None  # read once: written whole (renamed into place), it does not change
        while True:
            if raw is None and self.transport.stat(path) is not None:
                raw = self.transport.read(path)
            if raw is not None:
                found = self._checked_receipt(raw, path, batch_id, last_chance=time.monotonic() >= deadline)
                if found is not None:
                    return found
            elif time.monotonic() >= deadline:
                raise TransientError(
                    f"agency {self.code}: no receipt for batch {batch_id} within {self.config.receipt_timeout:g}s",
                    batch_id=batch_id,
                )
            time.sleep(self.config.poll_interval)

    def _checked_receipt(self, raw: bytes, path: str, batch_id: str, *,
                         last_chance: bool) -> tuple[dict, str | None] | None:  # fmt: skip
        """The receipt ``raw`` (read from ``path``) once its signature checks out; None while its
        signature may still be on its way."""
        signature_path = f"{RECEIPTS}/{batch_id}{RECEIPT_SIGNATURE}"
        signature = self.transport.read(signature_path) if self.transport.stat(signature_path) is not None else None
        try:
            kept = self.seal.verify_receipt(raw, signature)
        except RefusedInput as exc:
            if signature is None and not last_chance:
                return None  # an agency may write the receipt before its .jws: wait for it until the deadline
            # whatever it says, the agency did not vouch for it: no delivery is marked by it
            raise FatalError(f"agency {self.code}: receipt {path} refused: {exc}") from exc
        try:
            receipt = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise FatalError(f"agency {self.code}: receipt {path} is not JSON: {exc}") from exc
        if not isinstance(receipt, dict) or receipt.get("batch_id") != batch_id:
            raise FatalError(f"agency {self.code}: receipt {path} is not for batch {batch_id}")
        return receipt, kept.decode("ascii") if kept is not None else None

    def _receipts(self, batch_id: str, messages: Sequence[OutboundMessage], receipt: dict,
                  signature: str | None) -> list[Receipt]:  # fmt: skip
        if receipt.get("status") == "rejected":
            # the agency found the batch damaged; writing it again may well succeed
            raise TransientError(f"agency {self.code} rejected batch {batch_id}: {receipt.get('reason')}")
        listed = [receipt.get("acks") or [], receipt.get("errors") or []]
        if not all(isinstance(items, list) and all(isinstance(i, dict) for i in items) for items in listed):
            raise FatalError(f"agency {self.code}: receipt for batch {batch_id} is malformed: "
                             "'acks' and 'errors' must be lists of objects")  # fmt: skip
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
                    agency_signature=signature,
                ))  # fmt: skip
            except (KeyError, TypeError, ValueError) as exc:
                raise FatalError(f"agency {self.code}: malformed ack in the receipt for batch {batch_id}: {exc}") from exc
        return out

    # --- inbound --------------------------------------------------------------------------
    def fetch(self, after: Cursor) -> Page:
        """The next chunk of the batch in progress, else the first of the next ready batch (module docstring)."""
        self.claims.ensure_dirs()
        progress = in_progress(after.token)
        if progress is not None:
            page = self._continue(*progress, after)
            if page is not None:
                return page
            after = Cursor(after.position)  # the batch in progress is gone, and its offset with it
        candidates = self.claims.candidates()
        for index, candidate in enumerate(candidates):
            claimed = self.claims.claim(candidate)
            if claimed is None:
                continue  # another worker was faster
            page = self._start(claimed, candidate, after, more=index + 1 < len(candidates))
            if page is not None:
                return page
            # None: already loaded (and now moved to processed/), so go on down the list we have
        return Page(records=[], next_cursor=after, more=False)

    def _start(self, claimed: str, candidate: Candidate, after: Cursor, more: bool) -> Page | None:
        batch_id = candidate.batch_id
        self._drop_reader()
        # the cursor names a batch alone once its last page committed (a crash came before the move)
        if batch_id == after.token or (self.is_loaded is not None and self.is_loaded(batch_id)):
            log.info("agency %s: batch %s was loaded before; moving it to processed/", self.code, batch_id)
            self.claims.finish(batch_id)
            return None
        try:
            if candidate.problem:
                raise RefusedInput(candidate.problem)
            self._reader = self._open(claimed, batch_id)
        except RefusedInput as exc:
            return self._refused(claimed, batch_id, candidate.sequence, after, exc, more)
        return self._page(after, more)

    def _continue(self, batch_id: str, offset: int, after: Cursor) -> Page | None:
        """The chunk after record ``offset`` of the batch the hub is part-way through; None if it is gone."""
        reader = self._reader
        if reader is None or reader.batch_id != batch_id or reader.position != offset:
            # another worker began it, or the hub did not commit what we handed out: check it again
            self._drop_reader()
            claimed = self.claims.take_over(batch_id)
            if claimed is None:
                log.warning("agency %s: batch %s, loaded up to record %d, is no longer in %s/; going on without it",
                            self.code, batch_id, offset, PROCESSING)  # fmt: skip
                return None
            try:
                self._reader = self._open(claimed, batch_id)
                self._reader.seek(offset)
            except RefusedInput as exc:
                return self._refused(claimed, batch_id, -1, Cursor(after.position), exc, None)
        return self._page(after, None)

    def _open(self, claimed: str, batch_id: str) -> BatchReader:
        manifest, manifest_bytes = read_manifest(self.transport, claimed, batch_id, self.config)
        return open_batch(self.transport, claimed, manifest, manifest_bytes, config=self.config, seal=self.seal)

    def _page(self, after: Cursor, more: bool | None) -> Page:
        """The next chunk of the open batch; ``more``: whether another batch waits (None: look)."""
        reader = self._reader
        assert reader is not None
        batch_id, start = reader.batch_id, reader.position
        self.claims.keep(batch_id)
        try:
            records = reader.take(self.config.chunk_records, ref_field=self.config.record_id_field)
        except RefusedInput as exc:  # its files changed after they were checked
            return self._refused(self.claims.held[batch_id], batch_id, -1, Cursor(after.position), exc, None)
        cursor = Cursor(max(after.position, reader.manifest.sequence), reader.token)
        complete = reader.complete
        if complete:
            self._drop_reader()
            more = self.claims.waiting(besides=batch_id) if more is None else more
        return Page(records=records, next_cursor=cursor, more=not complete or bool(more), batch_id=batch_id,
                    batch_offset=start, batch_complete=complete)  # fmt: skip

    def _refused(self, claimed: str, batch_id: str, sequence: int, after: Cursor, exc: RefusedInput,
                 more: bool | None) -> Page:  # fmt: skip
        self._drop_reader()
        self.claims.fail(claimed, batch_id, str(exc))
        return Page(records=[], next_cursor=Cursor(max(after.position, sequence), after.token),
                    more=self.claims.waiting(besides=batch_id) if more is None else more,
                    rejected=[Rejected(ref=batch_id, reason=str(exc))])  # fmt: skip

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def acknowledge(self, page: Page) -> None:
        """The hub committed ``page``: after a batch's last page, move it to processed/ (else a no-op)."""
        if page.batch_id and page.batch_complete:
            self.claims.finish(page.batch_id)

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
        self._drop_reader()
        self.transport.close()


def _seal_from_context(config: FileDropConfig, context) -> Seal:
    tls = context.tls
    files = {"signing_cert": tls.hub_signing_cert, "signing_key": tls.hub_signing_key,
             "trusted_ca": tls.ca, "peer_cert": tls.agency_cert}  # fmt: skip
    missing = sorted(k for k, v in files.items() if v is None)
    if missing:
        raise ConfigurationError(f"agency {config.code}: signed drops (seal = {config.seal!r}) need TLS files: "
                                 f"{', '.join(missing)}")  # fmt: skip
    from certs.sealer import DropSeal  # only agencies that sign need the JOSE stack

    return DropSeal.from_files(**files, encrypt=config.encrypts, decryption_keys=tls.hub_previous_signing_keys)


def from_spec(spec, context, *, seal: Seal | None = None, is_loaded: Callable[[str], bool] | None = None):
    """Build the adapter from an AgencySpec (endpoint + ``[filedrop]`` table) and an AdapterContext.

    With ``seal = "sign"`` or ``"sign+encrypt"`` (or the old ``sealed = true``) in ``[filedrop]``
    and no explicit ``seal``, the seal is built from ``context.tls`` (hub signing cert/key, CA,
    the agency's signing certificate); ``"sign"`` signs manifests and leaves files plain.
    """
    data = {"code": spec.code, "endpoint": spec.endpoint, "record_id_field": spec.violation_mapping.record_id,
            "connect_timeout": context.connect_timeout, "read_timeout": context.read_timeout, **spec.transport}  # fmt: skip
    try:
        config = FileDropConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"agency {spec.code}: [filedrop] {describe_errors(exc)}") from exc
    if seal is None and config.signs:
        seal = _seal_from_context(config, context)
    transport = make_transport(config, secret=context.secret, staging_dir=context.work_dir)
    return FileDropAdapter(config, transport, seal=seal, is_loaded=is_loaded)
