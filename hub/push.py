"""Push: one agency's due deliveries sent batch by batch, the logic behind `hub sync --push` and the push task.

Deliveries are claimed (marked *sending*, their attempt counted) a window of whole batches at a
time, in a commit before any of them goes out; their receipts, or their failure scheduled for
retry, are stored in a later commit. While a window is on the wire, one transaction stores the
receipts of the window before it and claims the window after it: the agency's time and the hub's
overlap instead of adding up, and a transaction's fixed cost is shared by several batches. The
batches of a window go out one at a time, in order; one refused by the agency ends the push.

A crash leaves rows in *sending*; only the lease holder pushes for an agency, so the next push
resends them under the same message ids and the agency recognises them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from adapters.base import AgencyAdapter, OutboundMessage, Receipt, payload_digest
from contracts.mapping import canonical_licence_to_native
from contracts.records import LicenceGrant
from contracts.registry import AgencySpec
from hub import audit
from hub.clock import utcnow
from hub.errors import FatalError, HubError, TransientError
from hub.models import OPEN_STATES_SQL, Agency, Delivery, DeliveryState, LicenceRevision
from hub.outbox import newest_deliveries, update_deliveries
from hub.sync import Fence, agency_row, backoff_delay

__all__ = ["CLAIM_WINDOW", "PushResult", "WINDOW_WAIT", "claim_window_for", "push_agency"]


@dataclass
class PushResult:
    agency: str
    delivered: int = 0
    duplicates: int = 0
    retrying: int = 0
    dead: int = 0
    error: str | None = None


@dataclass(frozen=True)
class _Claimed:
    id: int
    state_before: str  # what a claim that is never sent goes back to
    sent_digest: str
    message: OutboundMessage


_DUE = (  # built once: a claim per window
    # the payload as its JSON text, for orjson: the driver would parse it with json, twice as slow
    sa.select(Delivery.id, Delivery.state, Delivery.message_id, sa.cast(LicenceRevision.payload, sa.Text))
    .join(LicenceRevision, LicenceRevision.id == Delivery.revision_id)  # the batch's grants in the same query
    .where(Delivery.agency_code == sa.bindparam("agency"))
    .where(sa.text(OPEN_STATES_SQL))  # redundant, but it is what lets the database use ix_deliveries_open
    .where(
        (Delivery.state == DeliveryState.SENDING)  # left by a crashed holder of this agency's lease
        | (Delivery.state.in_((DeliveryState.PENDING, DeliveryState.WAITING_RETRY))
           & (Delivery.next_attempt_at <= sa.bindparam("now")))
    )
    # past what this run claimed already: the window on the wire (sending, but ours and alive) and,
    # above all, the index entries of every row delivered since the run began. Until vacuum removes
    # them the index keeps those, and a claim from the start walked them all: 4 ms per claim at the
    # start of a 40,000-delivery push, 21 ms at its end. A retry that falls due during the run, behind
    # this point, waits for the next run.
    .where(Delivery.id > sa.bindparam("after"))
    .order_by(Delivery.id)
    .limit(sa.bindparam("limit"))
)
_DECISION_NO = LicenceGrant.model_fields["decision_no"].alias
_PUSHED = sa.update(Agency).where(Agency.code == sa.bindparam("b_code")).values(last_push_at=sa.bindparam("b_at"))


#: deliveries claimed per transaction, in whole batches of the agency's size: a transaction's fixed
#: cost (its statements, the audit chain's lock, the commit) was most of a 50-licence batch's time
CLAIM_WINDOW = 200
#: Seconds a window's batches may wait on an agency's receipts, one after another. A window's
#: receipts are stored once all of it is back, and the task's soft time limit (540 s) stopping a
#: push mid-window loses them: GHFJ's two batches of a window could wait 300 s each, and a window
#: that outlasts the limit never gets through however often it is sent.
WINDOW_WAIT = 240.0


def claim_window_for(spec: AgencySpec, adapter: AgencyAdapter, claim: int = CLAIM_WINDOW) -> int:
    """Deliveries per window: ``claim`` in whole batches (at least one), fewer if their receipts would wait too long."""
    batches = max(1, claim // spec.batch_size)
    if adapter.receipt_wait > 0:
        batches = max(1, min(batches, int(WINDOW_WAIT // adapter.receipt_wait)))
    return spec.batch_size * batches


@dataclass
class _Landed:
    """What became of a window of batches sent one after another."""

    answered: list[_Claimed] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    failed: list[_Claimed] = field(default_factory=list)  # the batch the agency did not take
    error: HubError | None = None
    unsent: list[_Claimed] = field(default_factory=list)  # the batches after it


class _Wire:
    """A window of batches on the wire, sent one batch at a time from a thread of its own while
    the caller works the database."""

    def __init__(self, adapter: AgencyAdapter, batch_size: int) -> None:
        self._adapter, self._batch_size = adapter, batch_size
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"push-{adapter.code}")
        self._flight: Future[_Landed] | None = None
        self.window: list[_Claimed] = []

    def send(self, window: list[_Claimed]) -> None:
        self.window = window
        self._flight = self._pool.submit(self._deliver, window)

    def _deliver(self, window: list[_Claimed]) -> _Landed:
        landed = _Landed()
        for start in range(0, len(window), self._batch_size):
            batch = window[start : start + self._batch_size]
            try:
                landed.receipts += self._adapter.deliver([c.message for c in batch])
            except HubError as exc:
                landed.failed, landed.error, landed.unsent = batch, exc, window[start + self._batch_size :]
                break
            landed.answered += batch
        return landed

    def land(self) -> _Landed:
        """Once the window is through: raises only what is not a HubError (a bug, not the agency)."""
        flight, self._flight, self.window = self._flight, None, []
        assert flight is not None, "land() without a window on the wire"
        return flight.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)  # no request outlives the push


def push_agency(engine: Engine, spec: AgencySpec, adapter: AgencyAdapter, *, fence: Fence | None = None,
                now: Callable[[], dt.datetime] = utcnow, max_batches: int | None = None,
                claim_window: int = CLAIM_WINDOW) -> PushResult:  # fmt: skip
    """Send every due delivery for one agency, batch by batch, until none is due (or ``max_batches`` went out).

    Deliveries are claimed ``claim_window`` at a time (rounded down to whole batches, at least one; fewer
    where the receipts come later than the answer, see claim_window_for).
    Transient failures schedule a retry (or mark the delivery dead at the agency's attempt
    limit) and end this run; fatal and configuration errors do the same, then propagate, except a
    FatalError that names the messages refused (``refused``): those alone fail, the rest of their
    batch goes back, and the run ends as after a transient failure. Batches claimed but not sent
    when one before them fails go back as they were, their attempt uncounted.
    """
    result = PushResult(spec.code)
    window = claim_window_for(spec, adapter, claim_window)
    allowance = None if max_batches is None else max_batches * spec.batch_size
    landed = _Landed()  # its receipts are stored by the next transaction
    after = 0  # the last delivery id this run claimed (or found dead on arrival)
    wire = _Wire(adapter, spec.batch_size)
    # one connection for the run: no pool checkout (and pre-ping) per transaction
    with contextlib.closing(wire), engine.connect() as conn, _commits_without_flush(conn):
        while True:
            limit = window if allowance is None else min(window, allowance)
            try:
                claimed, seen = _transaction(conn, _store_and_claim, spec, fence, landed.answered, landed.receipts,
                                             now(), result, limit=limit, after=after)
            except BaseException:
                if wire.window:
                    _store_landed_quietly(conn, spec, fence, wire, now(), result)
                raise
            if not wire.window and not claimed and seen == after:
                return result
            try:
                landed = wire.land() if wire.window else _Landed()
            except BaseException:  # not the agency (a HubError is in landed): a bug, or the process stopping
                with contextlib.suppress(Exception):  # the window just claimed goes back unsent, if it can
                    _transaction(conn, _settle_failure, spec, fence, _Landed(), claimed, now(), result)
                raise
            if landed.error is not None:
                _transaction(conn, _settle_failure, spec, fence, landed, claimed, now(), result)
                result.error = f"{type(landed.error).__name__}: {landed.error}"
                if isinstance(landed.error, TransientError) or getattr(landed.error, "refused", None):
                    return result  # a later run goes on (the refused messages failed alone, in their rows)
                raise landed.error
            after = seen
            if claimed:
                wire.send(claimed)
                allowance = None if allowance is None else allowance - len(claimed)


@contextlib.contextmanager
def _commits_without_flush(conn: Connection) -> Iterator[None]:
    """PostgreSQL: the run's commits return before their WAL is flushed to disk (synchronous_commit off).

    A flush per window was 1.5-6 ms of the push's own thread, and nothing depends on it: if the
    server crashes, the last few commits (well under a second of them) are lost whole, never half.
    A lost claim leaves its window pending and a lost store leaves it sending; either way the next
    push resends it under the same message ids and the agency answers with the receipt it already
    gave. SQLite runs with synchronous=NORMAL, which makes the same trade.
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.exec_driver_sql("SET synchronous_commit = off")
    conn.commit()
    try:
        yield
    finally:
        # the connection goes back to the pool: whatever uses it next must commit durably again
        try:
            conn.rollback()
            conn.exec_driver_sql("RESET synchronous_commit")
            conn.commit()
        except Exception:  # noqa: BLE001 - whatever went wrong, the pool closes it instead of reusing it
            conn.invalidate()


def _transaction(conn: Connection, work: Callable[..., Any], *args, **kwargs) -> Any:
    with Session(bind=conn, expire_on_commit=False) as session:
        outcome = work(session, *args, **kwargs)
        session.commit()
        return outcome


def _store_and_claim(session: Session, spec: AgencySpec, fence: Fence | None, sent: list[_Claimed],
                     receipts: Sequence[Receipt], now: dt.datetime, result: PushResult, *, limit: int,
                     after: int) -> tuple[list[_Claimed], int]:  # fmt: skip
    """Store the receipts of ``sent`` and claim up to ``limit`` more deliveries after id ``after``, in the caller's transaction.

    A delivery whose stored grant no longer maps (its agency's contract changed since it was
    recorded) is a dead letter at once, named with why, and the claim goes on past it: no retry
    could send it, and every delivery behind it would wait for good.

    Returns the claimed deliveries and the highest delivery id looked at.
    """
    if fence:
        fence(session)
    if sent:
        _store_receipts(session, spec, sent, receipts, now, result)
    claimed, seen = [], after
    for row in _due(session, spec, now, limit, after) if limit > 0 else []:
        seen = row[0]
        try:
            claimed.append(_message(spec, *row))
        except Exception as exc:  # noqa: BLE001 - whatever mapping a stored grant raises is about that grant alone
            _dead_on_arrival(session, spec, row[0], row[2], exc, now, result)
    if claimed:
        update_deliveries(session, [c.id for c in claimed],
                           {"state": DeliveryState.SENDING, "sending_since": now, "updated_at": now},
                           {"sent_digest": [c.sent_digest for c in claimed]}, attempts=+1)  # fmt: skip
    return claimed, seen


def _dead_on_arrival(session: Session, spec: AgencySpec, delivery_id: int, message_id: str, exc: Exception,
                     now: dt.datetime, result: PushResult) -> None:  # fmt: skip
    why = f"the stored grant no longer maps to {spec.code}'s contract: {exc}"[:2000]
    session.connection().execute(
        sa.update(Delivery).where(Delivery.id == delivery_id)
        .values(state=DeliveryState.DEAD, last_error=why, sending_since=None, updated_at=now)
    )  # fmt: skip
    audit.append(session, actor="hub", action="delivery.dead", subject=f"delivery:{message_id}",
                 detail={"agency": spec.code, "attempts": 0, "error": why})  # fmt: skip
    result.dead += 1
    result.error = why
    agency = agency_row(session, spec.code)
    agency.last_error, agency.last_error_at = f"push: {why}"[:2000], now
    session.add(agency)


def _store_landed_quietly(conn: Connection, spec: AgencySpec, fence: Fence | None, wire: _Wire, now: dt.datetime,
                          result: PushResult) -> None:  # fmt: skip
    """While the caller raises: wait for the window on the wire and store what it can of its outcome.

    Whatever fails here is the next push's to mend: the window stays *sending* and is resent under
    the same message ids. Its own failure is not raised over the caller's.
    """
    with contextlib.suppress(Exception):
        landed = wire.land()
        _transaction(conn, _settle_failure, spec, fence, landed, [], now, result)


def _due(session: Session, spec: AgencySpec, now: dt.datetime, limit: int, after: int) -> list[sa.Row]:
    return session.connection().execute(_DUE, {"agency": spec.code, "now": now, "limit": limit, "after": after}).all()


def _message(spec: AgencySpec, delivery_id: int, state: str, message_id: str, payload: str) -> _Claimed:
    grant = orjson.loads(payload)  # validated when it was recorded: mapped as it was stored
    native = canonical_licence_to_native(grant, spec.licence_mapping)
    decision_no = grant.get(_DECISION_NO)
    if not isinstance(decision_no, str) or not decision_no:
        raise ValueError(f"delivery {message_id}: the stored grant has no decision number ({_DECISION_NO})")
    # one left in sending by a crashed holder goes back, unsent, as the sweeper would return it
    before = DeliveryState.WAITING_RETRY if state == DeliveryState.SENDING else state
    return _Claimed(delivery_id, before, payload_digest(native), OutboundMessage(message_id, decision_no, native))


def _settle_failure(session: Session, spec: AgencySpec, fence: Fence | None, landed: _Landed,
                    claimed: list[_Claimed], now: dt.datetime, result: PushResult) -> None:  # fmt: skip
    """Store the receipts the agency gave, schedule the refused batch for retry (or dead), and put
    every batch not sent back as it was before its claim."""
    if fence:
        fence(session)
    if landed.answered:
        _store_receipts(session, spec, landed.answered, landed.receipts, now, result)
    released: list[_Claimed] = []
    if landed.error is not None:
        refused = getattr(landed.error, "refused", None) or {}
        named = [c for c in landed.failed if c.message.message_id in refused]
        if named:
            # the messages the agency (or the adapter) would not take carry the failure alone; the
            # rest of their batch goes back as it was, to go again without them
            for item in named:
                why = FatalError(f"agency {spec.code} refused message {item.message.message_id}: "
                                 f"{refused[item.message.message_id]}")  # fmt: skip
                _fail(session, spec, [item.id], why, now, result)
            released = [c for c in landed.failed if c.message.message_id not in refused]
        else:
            _fail(session, spec, [c.id for c in landed.failed], landed.error, now, result)
    unsent = released + landed.unsent + claimed
    if unsent:
        update_deliveries(session, [c.id for c in unsent], {"sending_since": None, "updated_at": now},
                           {"state": [c.state_before for c in unsent]}, attempts=-1)  # fmt: skip


def _fail(session: Session, spec: AgencySpec, ids: list[int], exc: HubError, now: dt.datetime, result: PushResult) -> None:
    retry_after = getattr(exc, "retry_after", None)
    failed = session.exec(select(Delivery).where(Delivery.id.in_(ids), Delivery.state == DeliveryState.SENDING)).all()
    newest = newest_deliveries(session, failed)
    for delivery in failed:
        delivery.last_error = f"{type(exc).__name__}: {exc}"[:2000]
        delivery.sending_since, delivery.updated_at = None, now
        later = newest.get((delivery.licence_id, delivery.agency_code), delivery.id)
        if later > delivery.id:
            # the licence changed while this was on the wire: sent again after its backoff, the old
            # state would reach the agency after the new one, which is due now
            delivery.state, delivery.superseded_by = DeliveryState.SUPERSEDED, later
        elif delivery.attempts >= spec.max_attempts:
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
    agency = agency_row(session, spec.code)
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
        update_deliveries(session, [id_ for id_, _ in stored],
                           {"state": DeliveryState.DELIVERED, "sending_since": None, "updated_at": now,
                            "last_error": None},
                           {"ack_id": [r.ack_id for _, r in stored], "acked_at": [r.received_at for _, r in stored],
                            "receipt_digest": [r.digest for _, r in stored]})  # fmt: skip
        # one hash-chained entry per window, naming every receipt in it (was one per receipt, each
        # reading the chain's last hash: most of a push's time)
        digests = "\n".join(e["digest"] for e in entries).encode("utf-8")
        detail: dict = {"agency": spec.code, "receipts": entries}
        signed = list(dict.fromkeys(r.agency_signature for _, r in stored if r.agency_signature))
        if signed:  # the agency's own word for these acks, which the hub's chain alone cannot prove
            detail["agency_signatures"] = signed
        audit.append(session, actor="hub", action="delivery.receipt", subject=f"agency:{spec.code}",
                     detail=detail,
                     payload_digest=hashlib.sha256(digests).hexdigest())  # fmt: skip
    if mismatched:
        _fail(session, spec, mismatched, TransientError("no receipt, or the receipt's digest differs from what was sent"),
              now, result)  # fmt: skip
    # a Core UPDATE: loading the agency's row through the ORM cost two round trips per batch
    session.connection().execute(_PUSHED, {"b_code": spec.code, "b_at": now})
