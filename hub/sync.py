"""Pull for one agency, the logic behind `hub sync --pull` and the pull task; what push (hub.push) shares with it.

Each page's records, quarantined rejects, batch id and the cursor that follows them are
committed in ONE transaction, so the cursor is never ahead of its data; the adapter is told to
acknowledge (e.g. move a file batch to processed/) only after that commit. A file batch may come
in several pages: it is recorded as loaded with its last page only, so a crash between pages
leaves a cursor that resumes it after the last committed page, never a batch marked loaded early.
A page is mapped and validated before its transaction begins, which then holds database work only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import random
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapters.base import AgencyAdapter, Cursor, Page
from contracts.mapping import native_to_violation
from contracts.records import ViolationRecord
from contracts.registry import AgencySpec
from hub import audit
from hub.clock import utcnow
from hub.db import WalCheckpointer, session_scope
from hub.errors import ContractViolation, FatalError, Problem, TransientError
from hub.gcpause import cyclic_gc_paused
from hub.models import Agency, InboundBatch, SyncCursor
from hub.quarantine import Refusal, quarantine_many
from hub.violations import store_violations, take_agency_turns

__all__ = ["CheckedPage", "Fence", "PageReader", "PullResult", "agency_row", "backoff_delay", "check_page", "commit_page",
           "pull_agency"]

MAX_BACKOFF_SECONDS = 3600.0
Fence = Callable[[Session], None]  # raises LeaseLost when this worker no longer holds the agency


@dataclass
class PullResult:
    agency: str
    pages: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    skipped_batches: int = 0
    cursor: int = 0


def backoff_delay(attempts: int, base: float, *, retry_after: float | None = None, rng=random) -> float:
    """Exponential backoff with jitter (50–100% of the step), never shorter than Retry-After."""
    step = min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)
    delay = step * (0.5 + rng.random() / 2)
    return max(delay, retry_after or 0.0)


def agency_row(session: Session, code: str) -> Agency:
    row = session.get(Agency, code)
    if row is None:
        raise FatalError(f"agency {code} is not in the database; run `hub init` after adding its data file")
    return row


# --- pull -------------------------------------------------------------------------------
@dataclass
class CheckedPage:
    """A page run through the contract before any database work: its valid records, and the
    refused ones with every reason, to be quarantined in the page's transaction."""

    page: Page
    valid: list[ViolationRecord]
    refused: list[tuple[str, list[Problem], str]]  # record ref, problems, raw


def check_page(spec: AgencySpec, page: Page) -> CheckedPage:
    """Map and validate every record of ``page``; no database, so no transaction waits on it."""
    valid, refused = [], []
    for index, inbound in enumerate(page.records, start=page.batch_offset + 1):
        ref = inbound.ref or f"cursor {page.next_cursor.position} item {index}"
        try:
            valid.append(native_to_violation(inbound.native, spec.violation_mapping, agency_code=spec.code, record=ref))
        except ContractViolation as exc:
            refused.append((ref, exc.problems, inbound.raw))
    return CheckedPage(page, valid, refused)


def _store_page(session: Session, spec: AgencySpec, checked: CheckedPage, result: PullResult) -> None:
    # taken before any of the page is quarantined: a record refused in this page is a later version
    # than a valid one before it, and its stored earlier version must not release it
    began = utcnow()
    refusals = [Refusal(r.ref, [Problem(r.ref, "(batch)", r.reason)], r.raw or "") for r in checked.page.rejected]
    refusals += [Refusal(ref, problems, raw) for ref, problems, raw in checked.refused]
    take_agency_turns(session, {spec.code})  # before the quarantine rows: see there
    # one lookup for the page's refused records; each is counted, identical ones share one row
    quarantine_many(session, refusals, source="pull", agency_code=spec.code, raw_format="native")
    result.quarantined += len(refusals)
    for outcome in store_violations(session, checked.valid, before=began):  # the page at once: row-at-a-time ORM was the bottleneck
        setattr(result, outcome.value, getattr(result, outcome.value) + 1)


class PageReader:
    """An adapter's pages in order; for an adapter that allows it, the next page is requested
    while the caller stores this one, so the agency's time and ours overlap instead of adding up.

    At most one page is read ahead (memory stays one page deep), and close() waits for it, so no
    request outlives the pull. A failure of the page read ahead surfaces when that page is asked for,
    as it would have unread ahead.
    """

    def __init__(self, adapter: AgencyAdapter) -> None:
        self._adapter = adapter
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"read-ahead-{adapter.code}") if adapter.read_ahead else None
        self._ahead: tuple[Cursor, Future[Page]] | None = None

    def fetch(self, cursor: Cursor, *, read_ahead: bool = True) -> Page:
        if self._ahead is not None and self._ahead[0] == cursor:
            page = self._ahead[1].result()
            self._ahead = None
        else:
            self._discard()
            page = self._adapter.fetch(cursor)
        if self._pool is not None and read_ahead and page.more:
            self._ahead = (page.next_cursor, self._pool.submit(self._adapter.fetch, page.next_cursor))
        return page

    def _discard(self) -> None:
        if self._ahead is not None:
            future, self._ahead = self._ahead[1], None
            if not future.cancel():
                with contextlib.suppress(Exception):  # nobody will store that page: its failure is moot
                    future.result()

    def close(self) -> None:
        self._discard()
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def pull_agency(engine: Engine, spec: AgencySpec, adapter: AgencyAdapter, *, fence: Fence | None = None,
                now: Callable[[], dt.datetime] = utcnow, max_pages: int | None = None) -> PullResult:  # fmt: skip
    """Fetch pages after the stored cursor until the agency has no more, committing page by page."""
    result = PullResult(spec.code)
    with session_scope(engine) as session:
        row = session.get(SyncCursor, spec.code)
        cursor = Cursor(row.position, row.token) if row else Cursor()
    reader = PageReader(adapter)
    # On SQLite a page of 1,000 records writes ~660 pages of log, so about every second commit
    # copied the log back into the database file itself (SQLite does at 1,000). A thread of its
    # own does that while the pull goes on (a pull of 500,000 records: +4-10%, bench/analysis.md).
    # Anything but a SQLite file makes it a no-op.
    checkpointer = WalCheckpointer(engine).start()
    try:
        while max_pages is None or result.pages < max_pages:
            with cyclic_gc_paused():  # a page's objects are many and short-lived (hub.gcpause)
                page = reader.fetch(cursor, read_ahead=max_pages is None or result.pages + 1 < max_pages)
                _refuse_a_stall(spec, cursor, page)
                commit_page(engine, spec, cursor, check_page(spec, page), result, fence=fence, now=now)
            adapter.acknowledge(page)
            result.pages += 1
            result.cursor = page.next_cursor.position
            cursor = page.next_cursor
            if not page.more:
                break
    finally:
        reader.close()
        checkpointer.stop()
    return result


def _refuse_a_stall(spec: AgencySpec, before: Cursor, page: Page) -> None:
    """An agency that says more follows but moves the cursor nowhere would be asked the same thing
    forever (one that caps our page size under a page-number scheme; a cursor API without a next
    cursor): stop and say so."""
    moved_nothing = not (page.records or page.rejected or page.batch_id)  # a refused drop batch is progress
    if page.more and moved_nothing and (page.next_cursor.position, page.next_cursor.token) == (
            before.position, before.token):  # fmt: skip
        raise FatalError(f"agency {spec.code}: the page after position {before.position} is empty and says more "
                         "records follow, but it does not move the cursor: stopping rather than asking again forever")


def commit_page(engine: Engine, spec: AgencySpec, before: Cursor, checked: CheckedPage, result: PullResult, *,
                fence: Fence | None = None, now: Callable[[], dt.datetime] = utcnow) -> None:  # fmt: skip
    """Store a checked page with its quarantined records, its audit entry and the cursor after it, in one
    transaction that first checks the stored cursor is still ``before``: nobody else moved it meanwhile."""
    with session_scope(engine) as session:
        if fence:
            fence(session)
        _commit_page(session, spec, before, checked, result, now())


def _commit_page(session: Session, spec: AgencySpec, before: Cursor, checked: CheckedPage, result: PullResult,
                 now: dt.datetime) -> None:  # fmt: skip
    page = checked.page
    row = session.get(SyncCursor, spec.code) or SyncCursor(agency_code=spec.code)
    # the token too: the pages of one file batch share a position and differ in the token's offset
    if (row.position, row.token) != (before.position, before.token):
        raise TransientError(f"agency {spec.code}: the cursor moved while this page was fetched; pull again")
    if page.next_cursor.position < row.position:
        raise FatalError(
            f"agency {spec.code}: cursor would move backwards ({row.position} → {page.next_cursor.position})"
        )
    known_batch = page.batch_id and session.exec(
        select(InboundBatch).where(InboundBatch.agency_code == spec.code, InboundBatch.batch_id == page.batch_id)
    ).first()
    in_batch = 0  # records of this file batch quarantined so far, this page's included
    if known_batch:
        # loaded before (a crash stopped its acknowledgement, or the agency dropped it again): never load twice
        result.skipped_batches += int(page.batch_complete)
    else:
        quarantined_before = result.quarantined
        _store_page(session, spec, checked, result)
        quarantined = result.quarantined - quarantined_before
        # the earlier pages' count is on the cursor row, so it holds whoever committed them
        in_batch = (row.batch_quarantined if page.batch_offset else 0) + quarantined
        if page.batch_id and page.batch_complete:  # its last page: only now is the batch loaded
            session.add(InboundBatch(agency_code=spec.code, batch_id=page.batch_id,
                                     records=page.batch_offset + len(page.records), quarantined=in_batch))  # fmt: skip
        if page.records or page.rejected:
            raws = "\n".join(r.raw for r in page.records).encode("utf-8")
            audit.append(session, actor="hub", action="pull.page", subject=f"agency:{spec.code}",
                         detail={"cursor_from": before.position, "cursor_to": page.next_cursor.position,
                                 "batch": page.batch_id, "batch_offset": page.batch_offset, "records": len(page.records),
                                 "quarantined": quarantined, "refs": [r.ref for r in page.records],  # all: see hub.evidence
                                 "rejected": [r.ref for r in page.rejected]},
                         payload_digest=hashlib.sha256(raws).hexdigest())  # fmt: skip
    row.position, row.token, row.updated_at = page.next_cursor.position, page.next_cursor.token, now
    row.batch_quarantined = in_batch if page.batch_id and not page.batch_complete else 0
    session.add(row)
    if not page.more:
        agency = agency_row(session, spec.code)
        agency.last_pull_at = now
        session.add(agency)

