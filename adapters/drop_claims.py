"""Which inbound batches of a drop root are ready, who holds which, and where each one ends up.

A batch moves ``from_agency/<id>`` → ``processing/<id>@<claimed-epoch>-<token>`` (a claim,
taken by rename: two workers cannot both win one) → ``processed/<id>`` once the hub committed
it, or ``failed/<id>`` with ``failed/<id>.error`` saying why it was refused. A claim older than
``claim_stale_after`` was left by a dead worker and is taken over by rename, like a new batch.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

from adapters.drop_config import FileDropConfig
from adapters.drop_manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, check_batch_id
from adapters.drop_transport import DropConflict, DropFileMissing, DropTransport
from hub.errors import RefusedInput

__all__ = ["FAILED", "FROM_AGENCY", "PROCESSED", "PROCESSING", "Candidate", "DropClaims"]

log = logging.getLogger(__name__)

FROM_AGENCY, PROCESSING, PROCESSED, FAILED = "from_agency", "processing", "processed", "failed"


@dataclass(frozen=True)
class Candidate:
    sequence: int
    batch_id: str
    path: str  # where the batch directory is now (from_agency/… or processing/…)
    problem: str | None = None  # set: claim it only to fail it


class DropClaims:
    """The inbound half of one agency's drop root, as seen by one adapter (its claims until acknowledged)."""

    def __init__(self, transport: DropTransport, config: FileDropConfig) -> None:
        self.transport, self.config, self.code = transport, config, config.code
        self.held: dict[str, str] = {}  # batch id -> processing/ path, until finished or failed
        self._dirs_ready = False

    def ensure_dirs(self) -> None:
        if not self._dirs_ready:
            for folder in (FROM_AGENCY, PROCESSING, PROCESSED, FAILED):
                self.transport.mkdir(folder)
            self._dirs_ready = True

    def candidates(self) -> list[Candidate]:
        """Batches to claim, lowest sequence first: ours not yet finished, abandoned claims, ready batches."""
        found: list[Candidate] = []
        now = time.time()
        for batch_id, path in list(self.held.items()):  # ours, fetched but never acknowledged
            if self.transport.stat(path) is not None:
                found.append(Candidate(-1, batch_id, path))
            else:
                self.held.pop(batch_id)
        for entry in self.transport.list(PROCESSING):
            batch_id, _, stamp = entry.name.partition("@")
            claimed_at = _claim_time(stamp)
            if entry.is_dir and claimed_at is not None and now - claimed_at > self.config.claim_stale_after:
                if batch_id not in self.held:
                    found.append(Candidate(-1, batch_id, f"{PROCESSING}/{entry.name}"))
        for entry in self.transport.list(FROM_AGENCY):
            if entry.is_dir and not entry.name.startswith("."):
                candidate = self._readiness(entry.name, now)
                if candidate is not None:
                    found.append(candidate)
        return sorted(found, key=lambda c: (c.sequence, c.batch_id))

    def waiting(self, besides: str) -> bool:
        """Whether a batch other than ``besides`` is there to claim."""
        return any(c.batch_id != besides for c in self.candidates())

    def _readiness(self, name: str, now: float) -> Candidate | None:
        """A candidate if the batch is complete (or hopeless), None while it is still being written."""
        folder = f"{FROM_AGENCY}/{name}"
        try:
            check_batch_id(name)
        except ValueError as exc:
            return Candidate(-1, name, folder, problem=str(exc))
        manifest_entry = self.transport.stat(f"{folder}/{MANIFEST_NAME}")
        if manifest_entry is None:
            return None
        limit = self.config.max_file_bytes
        manifest_limit = min(limit, MAX_MANIFEST_BYTES)  # read whole, unlike the data files
        if manifest_entry.size > manifest_limit:
            return Candidate(-1, name, folder, problem=f"{folder}/{MANIFEST_NAME}: {manifest_entry.size} bytes "
                                                       f"is over the {manifest_limit} byte limit")  # fmt: skip
        try:
            manifest = Manifest.from_bytes(self.transport.read(f"{folder}/{MANIFEST_NAME}"), where=folder)
        except RefusedInput as exc:
            return Candidate(-1, name, folder, problem=str(exc))
        except DropFileMissing:
            return None
        overdue = now - manifest_entry.mtime > self.config.incomplete_grace
        for item in manifest.files:
            if item.size > limit:  # refused before anything of it is read, and without waiting for it
                return Candidate(manifest.sequence, name, folder,
                                 problem=f"{folder}/{item.name}: {item.size} bytes is over the {limit} byte limit")  # fmt: skip
            stored = self.transport.stat(f"{folder}/{item.name}")
            if stored is None or stored.size < item.size:
                if not overdue:
                    return None
                why = "missing" if stored is None else f"{stored.size} of {item.size} bytes"
                return Candidate(manifest.sequence, name, folder,
                                 problem=f"{folder}/{item.name}: {why} after {self.config.incomplete_grace:g}s")  # fmt: skip
        return Candidate(manifest.sequence, name, folder)

    def claim(self, candidate: Candidate) -> str | None:
        """Rename the batch into processing/ under a fresh claim; its path, or None if another worker won."""
        if candidate.path.startswith(PROCESSING) and self.held.get(candidate.batch_id) == candidate.path:
            return candidate.path  # already ours
        target = f"{PROCESSING}/{candidate.batch_id}@{int(time.time())}-{uuid.uuid4().hex[:8]}"
        try:
            self.transport.rename(candidate.path, target)
        except (DropFileMissing, DropConflict):
            return None
        self.held[candidate.batch_id] = target
        return target

    def take_over(self, batch_id: str) -> str | None:
        """Our claim on ``batch_id``, or another worker's taken over whatever its age; None if there is none.

        Only for the batch the hub's cursor says it is part-way through: the cursor is committed
        with the records, and one worker at a time pulls an agency (its lease), so whoever claimed
        it before has died or lost the lease. Should two pull anyway, only one commits: the hub
        refuses a page whose cursor moved while it was fetched.
        """
        mine = self.held.get(batch_id)
        if mine is not None and self.transport.stat(mine) is not None:
            return mine
        for entry in self.transport.list(PROCESSING):
            if entry.is_dir and entry.name.partition("@")[0] == batch_id:
                claimed = self.claim(Candidate(-1, batch_id, f"{PROCESSING}/{entry.name}"))
                if claimed is not None:
                    return claimed
        return None

    def keep(self, batch_id: str) -> None:
        """Renew a claim a long batch has held for half its stale time, so no one takes it for abandoned."""
        claimed = self.held.get(batch_id)
        stamp = _claim_time(claimed.partition("@")[2]) if claimed else None
        if claimed is None or stamp is None or time.time() - stamp < self.config.claim_stale_after / 2:
            return
        fresh = f"{PROCESSING}/{batch_id}@{int(time.time())}-{uuid.uuid4().hex[:8]}"
        self.transport.rename(claimed, fresh)  # an open file of it stays readable
        self.held[batch_id] = fresh

    def fail(self, claimed: str, batch_id: str, reason: str) -> None:
        log.warning("agency %s: batch %s refused: %s", self.code, batch_id, reason)
        self.held.pop(batch_id, None)
        target = self._free(FAILED, batch_id, claimed)
        self.transport.rename(claimed, f"{FAILED}/{target}")
        self.transport.write_atomic(f"{FAILED}/{target}.error", f"{reason}\n".encode("utf-8"))

    def finish(self, batch_id: str) -> None:
        """Move a loaded batch to processed/, whoever claimed it."""
        claimed = self.held.pop(batch_id, None)
        if claimed is None:  # claimed by another adapter instance, e.g. before a restart
            claimed = next((f"{PROCESSING}/{e.name}" for e in self.transport.list(PROCESSING)
                            if e.name.partition("@")[0] == batch_id), None)  # fmt: skip
        if claimed is None:
            log.warning("agency %s: batch %s is no longer claimed; nothing to move", self.code, batch_id)
            return
        self.transport.rename(claimed, f"{PROCESSED}/{self._free(PROCESSED, batch_id, claimed)}")

    def _free(self, folder: str, batch_id: str, claimed: str) -> str:
        """``batch_id`` if nothing in ``folder`` has that name yet, else the unique claim name."""
        if self.transport.stat(f"{folder}/{batch_id}") is None:
            return batch_id
        return claimed.rsplit("/", 1)[-1]


def _claim_time(stamp: str) -> float | None:
    try:
        return float(stamp.split("-", 1)[0])
    except ValueError:
        return None
