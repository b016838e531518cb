"""Push and pull for one agency: the logic behind `hub sync` and the Celery tasks.

Push: due deliveries are marked *sending* and their attempt counted in one commit, then sent;
receipts are stored (or the failure scheduled for retry) in a later commit, the one that also
claims the next batch. A crash between the two leaves rows in *sending*; only the lease holder
pushes for an agency, so the next push resends them under the same message ids and the agency
recognises them.

Pull: each page's records, quarantined rejects, batch id and the cursor that follows them are
committed in ONE transaction, so the cursor is never ahead of its data; the adapter is told to
acknowledge (e.g. move a file batch to processed/) only after that commit. A file batch may come
in several pages: it is recorded as loaded with its last page only, so a crash between pages
leaves a cursor that resumes it after the last committed page, never a batch marked loaded early.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import random
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from adapters.base import AgencyAdapter, Cursor, OutboundMessage, Page, Receipt, payload_digest
from contracts.mapping import licence_to_native, native_to_violation
from contracts.records import LicenceGrant
from contracts.registry import AgencySpec
from hub import audit
from hub.clock import utcnow
from hub.db import session_scope
from hub.errors import ContractViolation, FatalError, HubError, Problem, TransientError
from hub.gcpause import cyclic_gc_paused
from hub.models import OPEN_STATES_SQL, Agency, Delivery, DeliveryState, InboundBatch, LicenceRevision, SyncCursor
from hub.quarantine import quarantine
from hub.violations import store_violations

__all__ = ["PullResult", "PushResult", "backoff_delay", "pull_agency", "push_agency"]

MAX_BACKOFF_SECONDS = 3600.0
Fence = Callable[[Session], None]  # raises LeaseLost when this worker no longer holds the agency


@dataclass
class PushResult:
    agency: str
    delivered: int = 0
    duplicates: int = 0
    retrying: int = 0
    dead: int = 0
    error: str | None = None


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


def _agency(session: Session, code: str) -> Agency:
    row = session.get(Agency, code)
    if row is None:
        raise FatalError(f"agency {code} is not in the database; run `hub init` after adding its data file")
    return row


# --- push -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Claimed:
    id: int
    sent_digest: str
    message: OutboundMessage


_DELIVERIES = Delivery.__table__
_DUE = (  # built once: a claim per batch
    # the payload as its JSON text: pydantic parses and validates it in one step, in two thirds
    # of the time of the driver's json.loads followed by model_validate
    sa.select(Delivery.id, Delivery.message_id, sa.cast(LicenceRevision.payload, sa.Text))
    .join(LicenceRevision, LicenceRevision.id == Delivery.revision_id)  # the batch's grants in the same query
    .where(Delivery.agency_code == sa.bindparam("agency"))
    .where(sa.text(OPEN_STATES_SQL))  # redundant, but it is what lets the database use ix_deliveries_open
    .where(
        (Delivery.state == DeliveryState.SENDING)  # left by a crashed holder of this agency's lease
        | (Delivery.state.in_((DeliveryState.PENDING, DeliveryState.WAITING_RETRY))
           & (Delivery.next_attempt_at <= sa.bindparam("now")))
    )
    .order_by(Delivery.id)
    .limit(sa.bindparam("limit"))
)
_PUSHED = sa.update(Agency).where(Agency.code == sa.bindparam("b_code")).values(last_push_at=sa.bindparam("b_at"))


def push_agency(engine: Engine, spec: AgencySpec, adapter: AgencyAdapter, *, fence: Fence | None = None,
                now: Callable[[], dt.datetime] = utcnow, max_batches: int | None = None) -> PushResult:  # fmt: skip
    """Send every due delivery for one agency, batch by batch, until none is due.

    One transaction per batch stores the receipts of the batch just sent and claims the next one
    (the first claims only, the last stores only): a commit per batch instead of two. The claim
    still commits before its batch goes out, and never with that batch's own receipts.

    Transient failures schedule a retry (or mark the delivery dead at the agency's attempt
    limit) and end this run; fatal and configuration errors do the same, then propagate.
    """
    result, batches = PushResult(spec.code), 0
    claimed: list[_Claimed] = []
    receipts: list[Receipt] = []
    with engine.connect() as conn:  # one connection for the run: no pool checkout (and pre-ping) per batch
        while True:
            with Session(bind=conn, expire_on_commit=False) as session:
                claimed = _store_and_claim(session, spec, fence, claimed, receipts, now(), result,
                                           claim=max_batches is None or batches < max_batches)  # fmt: skip
            if not claimed:
                return result
            batches += 1
            try:
                receipts = adapter.deliver([c.message for c in claimed])
            except HubError as exc:
                with Session(bind=conn, expire_on_commit=False) as session:
                    _fail(session, spec, [c.id for c in claimed], exc, now(), result)
                    session.commit()
                result.error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, TransientError):
                    return result
                raise


def _store_and_claim(session: Session, spec: AgencySpec, fence: Fence | None, sent: list[_Claimed], receipts,
                     now: dt.datetime, result: PushResult, *, claim: bool) -> list[_Claimed]:  # fmt: skip
    """Commit the receipts of ``sent`` and the claim of the next batch (returned) in one transaction."""
    if fence:
        fence(session)
    if sent:
        # first: the claim below takes rows still in *sending*, as the batch just sent is until now
        _store_receipts(session, spec, sent, receipts, now, result)
    due = _due(session, spec, now) if claim else []
    try:
        claimed = [_message(spec, *row) for row in due]
    except Exception:
        # a stored grant that no longer maps stops the push, as it always did, but the receipts
        # above are true whatever it does: losing them would resend their batch on every run
        session.commit()
        raise
    if claimed:
        _update_deliveries(session, [c.id for c in claimed],
                           {"state": DeliveryState.SENDING, "sending_since": now, "updated_at": now},
                           {"sent_digest": [c.sent_digest for c in claimed]}, one_more_attempt=True)  # fmt: skip
    session.commit()
    return claimed


def _due(session: Session, spec: AgencySpec, now: dt.datetime) -> list[sa.Row]:
    return session.connection().execute(_DUE, {"agency": spec.code, "now": now, "limit": spec.batch_size}).all()


def _message(spec: AgencySpec, delivery_id: int, message_id: str, payload: str) -> _Claimed:
    grant = LicenceGrant.model_validate_json(payload)
    native = licence_to_native(grant, spec.licence_mapping)
    return _Claimed(delivery_id, payload_digest(native), OutboundMessage(message_id, grant.decision_no, native))


def _update_deliveries(session: Session, ids: list[int], same: dict[str, Any], each: dict[str, list], *,
                       one_more_attempt: bool = False) -> None:  # fmt: skip
    """Set ``same`` on every delivery of ``ids``, and ``each[column][i]`` on the i-th, in one statement.

    PostgreSQL: an UPDATE … FROM unnest(one array per column), one round trip per batch; the
    executemany before cost a round trip per row, over a third of a push to SCJG. SQLite runs in
    the process, where a Core executemany costs no round trips. (A CASE per column was slower:
    SQLAlchemy compiled its hundreds of bind parameters for every batch.)
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = _by_id(postgres, tuple(same), tuple(each), one_more_attempt)
    fixed = {f"v_{name}": value for name, value in same.items()}
    if postgres:
        params: dict | list = {**fixed, "a_id": ids, **{f"a_{name}": values for name, values in each.items()}}
    else:
        params = [{**fixed, "a_id": id_, **{f"a_{name}": values[i] for name, values in each.items()}}
                  for i, id_ in enumerate(ids)]  # fmt: skip
    session.connection().execute(statement, params)


@functools.cache
def _by_id(postgres: bool, fixed: tuple[str, ...], each: tuple[str, ...], one_more_attempt: bool) -> sa.Update:
    """The statement of _update_deliveries, built once per shape: built per batch, its construction and
    cache key cost as much CPU as running it."""
    table = _DELIVERIES
    values: dict[str, Any] = {name: sa.bindparam(f"v_{name}", type_=table.c[name].type) for name in fixed}
    if one_more_attempt:
        values["attempts"] = table.c.attempts + 1
    if not postgres:
        each_values = {name: sa.bindparam(f"a_{name}", type_=table.c[name].type) for name in each}
        return table.update().where(table.c.id == sa.bindparam("a_id")).values({**values, **each_values})
    names = ("id", *each)
    arrays = [sa.bindparam(f"a_{name}", type_=postgresql.ARRAY(table.c[name].type)) for name in names]
    rows = sa.func.unnest(*arrays).table_valued(*names).render_derived(name="v")
    # id = ANY(ids) as well: joined to unnest() alone, the planner may scan the whole outbox
    return (table.update().where(table.c.id == sa.func.any(arrays[0]), table.c.id == rows.c.id)
            .values({**values, **{name: rows.c[name] for name in each}}))  # fmt: skip


def _fail(session: Session, spec: AgencySpec, ids: list[int], exc: HubError, now: dt.datetime, result: PushResult) -> None:
    retry_after = getattr(exc, "retry_after", None)
    for delivery in session.exec(select(Delivery).where(Delivery.id.in_(ids))).all():
        delivery.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        delivery.sending_since, delivery.updated_at = None, now
        if delivery.attempts >= spec.max_attempts:
            delivery.state = DeliveryState.DEAD
            result.dead += 1
            audit.append(session, actor="hub", action="delivery.dead", subject=f"delivery:{delivery.message_id}",
                         detail={"agency": spec.code, "attempts": delivery.attempts, "error": delivery.last_error})  # fmt: skip
        else:
            delivery.state = DeliveryState.WAITING_RETRY
            delay = backoff_delay(delivery.attempts, spec.backoff_seconds, retry_after=retry_after)
            delivery.next_attempt_at = now + dt.timedelta(seconds=delay)
            result.retrying += 1
        session.add(delivery)
    agency = _agency(session, spec.code)
    agency.last_error, agency.last_error_at = f"push: {exc}"[:2000], now
    session.add(agency)


def _store_receipts(session, spec, claimed: list[_Claimed], receipts, now, result: PushResult) -> None:
    by_id = {r.message_id: r for r in receipts}
    mismatched, stored, entries = [], [], []
    for item in claimed:
        receipt = by_id.get(item.message.message_id)
        if receipt is None or receipt.digest != item.sent_digest:
            mismatched.append(item.id)
            continue
        stored.append((item.id, receipt))
        result.delivered += 1
        result.duplicates += int(receipt.duplicate)
        entries.append({"licence": item.message.licence_key, "message_id": item.message.message_id,
                        "ack_id": receipt.ack_id, "received_at": receipt.received_at.isoformat(),
                        "duplicate": receipt.duplicate, "digest": receipt.digest})  # fmt: skip
    if stored:
        _update_deliveries(session, [id_ for id_, _ in stored],
                           {"state": DeliveryState.DELIVERED, "sending_since": None, "updated_at": now,
                            "last_error": None},
                           {"ack_id": [r.ack_id for _, r in stored], "acked_at": [r.received_at for _, r in stored],
                            "receipt_digest": [r.digest for _, r in stored]})  # fmt: skip
        # one hash-chained entry per batch, naming every receipt in it (was one per receipt, each
        # reading the chain's last hash: most of a push's time)
        digests = "\n".join(e["digest"] for e in entries).encode("utf-8")
        audit.append(session, actor="hub", action="delivery.receipt", subject=f"agency:{spec.code}",
                     detail={"agency": spec.code, "receipts": entries},
                     payload_digest=hashlib.sha256(digests).hexdigest())  # fmt: skip
    if mismatched:
        _fail(session, spec, mismatched, TransientError("no receipt, or the receipt's digest differs from what was sent"),
              now, result)  # fmt: skip
    # a Core UPDATE: loading the agency's row through the ORM cost two round trips per batch
    session.connection().execute(_PUSHED, {"b_code": spec.code, "b_at": now})


# --- pull -------------------------------------------------------------------------------
def _store_page(session: Session, spec: AgencySpec, page: Page, result: PullResult) -> None:
    for rejected in page.rejected:
        quarantine(session, source="pull", agency_code=spec.code, record_ref=rejected.ref,
                   problems=[Problem(rejected.ref, "(batch)", rejected.reason)], raw=rejected.raw or "")  # fmt: skip
        result.quarantined += 1
    valid = []
    for index, inbound in enumerate(page.records, start=page.batch_offset + 1):
        ref = inbound.ref or f"cursor {page.next_cursor.position} item {index}"
        try:
            valid.append(native_to_violation(inbound.native, spec.violation_mapping, agency_code=spec.code, record=ref))
        except ContractViolation as exc:
            quarantine(session, source="pull", agency_code=spec.code, record_ref=ref, problems=exc.problems,
                       raw=inbound.raw)  # fmt: skip
            result.quarantined += 1
    for outcome in store_violations(session, valid):  # the page at once: row-at-a-time ORM was the bottleneck
        setattr(result, outcome.value, getattr(result, outcome.value) + 1)


class _PageReader:
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
    in_batch: tuple[str | None, int] = (None, 0)  # a file batch part-way through, and its records quarantined so far
    with session_scope(engine) as session:
        row = session.get(SyncCursor, spec.code)
        cursor = Cursor(row.position, row.token) if row else Cursor()
    reader = _PageReader(adapter)
    try:
        while max_pages is None or result.pages < max_pages:
            with cyclic_gc_paused():  # a page's objects are many and short-lived (hub.gcpause)
                page = reader.fetch(cursor, read_ahead=max_pages is None or result.pages + 1 < max_pages)
                earlier = in_batch[1] if page.batch_offset and in_batch[0] == page.batch_id else 0
                quarantined_before = result.quarantined
                with session_scope(engine) as session:
                    if fence:
                        fence(session)
                    # checks the stored cursor is still `cursor`: nobody else moved it meanwhile
                    _commit_page(session, spec, cursor, page, result, now(), quarantined_earlier=earlier)
            if not page.batch_complete:
                in_batch = (page.batch_id, earlier + result.quarantined - quarantined_before)
            adapter.acknowledge(page)
            result.pages += 1
            result.cursor = page.next_cursor.position
            cursor = page.next_cursor
            if not page.more:
                break
    finally:
        reader.close()
    return result


def _commit_page(session: Session, spec: AgencySpec, before: Cursor, page: Page, result: PullResult,
                 now: dt.datetime, *, quarantined_earlier: int = 0) -> None:  # fmt: skip
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
    if known_batch:
        # loaded before (a crash stopped its acknowledgement, or the agency dropped it again): never load twice
        result.skipped_batches += int(page.batch_complete)
    else:
        quarantined_before = result.quarantined
        _store_page(session, spec, page, result)
        quarantined = result.quarantined - quarantined_before
        if page.batch_id and page.batch_complete:  # its last page: only now is the batch loaded
            # quarantined: over the pages this process committed (each page's count is in its audit entry)
            session.add(InboundBatch(agency_code=spec.code, batch_id=page.batch_id,
                                     records=page.batch_offset + len(page.records),
                                     quarantined=quarantined_earlier + quarantined))  # fmt: skip
        if page.records or page.rejected:
            raws = "\n".join(r.raw for r in page.records).encode("utf-8")
            audit.append(session, actor="hub", action="pull.page", subject=f"agency:{spec.code}",
                         detail={"cursor_from": before.position, "cursor_to": page.next_cursor.position,
                                 "batch": page.batch_id, "batch_offset": page.batch_offset, "records": len(page.records),
                                 "quarantined": quarantined, "refs": [r.ref for r in page.records][:1000],
                                 "rejected": [r.ref for r in page.rejected]},
                         payload_digest=hashlib.sha256(raws).hexdigest())  # fmt: skip
    row.position, row.token, row.updated_at = page.next_cursor.position, page.next_cursor.token, now
    session.add(row)
    if not page.more:
        agency = _agency(session, spec.code)
        agency.last_pull_at = now
        session.add(agency)

