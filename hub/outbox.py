"""Outbox housekeeping: stale deliveries back into the queue, dead letters listed and retried, counts.

Deliveries move pending → sending → delivered | waiting_retry → … → dead (hub.push does the
moving). This module is what an operator and the sweeper need around that:

* ``sweep_stale`` returns deliveries stuck in *sending* — their worker died and nobody holds the
  agency's lease any more — to *waiting_retry*, due now. (The next lease holder would resend
  them anyway; sweeping makes the status honest and their retry visible.)
* ``list_dead`` / ``retry_dead``: dead letters, and putting them back to *pending* with their
  attempt count reset, by delivery id or for a whole agency.
* ``delivery_counts``: per agency and state, for ``hub status``.
* ``update_deliveries``: the push's own bulk UPDATE of a window's rows.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from pydantic import BaseModel
from sqlmodel import Session, select

from hub import audit
from hub.clock import utcnow
from hub.leases import is_live
from hub.models import Delivery, DeliveryState, Licence, SyncLease

__all__ = ["DeadLetter", "delivery_counts", "list_dead", "newest_deliveries", "retry_dead", "sweep_stale",
           "update_deliveries"]


class DeadLetter(BaseModel):
    """A delivery that used up its attempts: what, to whom, and the last error."""

    id: int
    message_id: str
    agency: str
    decision_no: str
    attempts: int
    last_error: str | None
    dead_since: dt.datetime


def sweep_stale(session: Session, *, older_than: dt.timedelta, now: dt.datetime | None = None) -> int:
    """Return deliveries left in *sending* longer than ``older_than`` by a dead worker to the queue.

    Only agencies whose lease is free or expired are touched: a live holder is still working on
    its rows and will store their receipts.

    Returns:
        How many deliveries were put back.
    """
    now = now or utcnow()
    cutoff = now - older_than
    stale = (Delivery.state == DeliveryState.SENDING, Delivery.sending_since < cutoff)
    codes = session.exec(select(Delivery.agency_code).where(*stale).distinct().order_by(Delivery.agency_code)).all()
    moved: dict[str, int] = {}
    for code in codes:
        if is_live(session.get(SyncLease, code), now):
            continue
        # one UPDATE that checks the state again as it writes: a new lease holder may have claimed
        # these rows, or stored their receipts, since they were counted (PostgreSQL re-reads a row
        # another transaction changed before updating it)
        done = session.connection().execute(
            sa.update(Delivery).where(Delivery.agency_code == code, *stale)
            .values(state=DeliveryState.WAITING_RETRY, next_attempt_at=now, sending_since=None, updated_at=now,
                    last_error="the worker sending it stopped before the agency's answer was stored")
        )  # fmt: skip
        if done.rowcount:
            moved[code] = done.rowcount
    for code, count in moved.items():
        audit.append(session, actor="sweeper", action="delivery.requeued", subject=f"agency:{code}",
                     detail={"deliveries": count, "older_than_seconds": older_than.total_seconds()})  # fmt: skip
    return sum(moved.values())


def list_dead(session: Session, *, agency: str | None = None) -> list[DeadLetter]:
    """Dead deliveries, oldest first, optionally for one agency."""
    query = (
        select(Delivery, Licence.decision_no)
        .join(Licence, Licence.id == Delivery.licence_id)
        .where(Delivery.state == DeliveryState.DEAD)
        .order_by(Delivery.updated_at, Delivery.id)
    )
    if agency:
        query = query.where(Delivery.agency_code == agency.upper())
    return [
        DeadLetter(id=d.id, message_id=d.message_id, agency=d.agency_code, decision_no=decision_no,
                   attempts=d.attempts, last_error=d.last_error, dead_since=d.updated_at)  # fmt: skip
        for d, decision_no in session.exec(query).all()
    ]


def retry_dead(session: Session, *, delivery_id: int | None = None, agency: str | None = None,
               actor: str = "operator", now: dt.datetime | None = None) -> list[int]:  # fmt: skip
    """Put dead deliveries back to *pending*, attempts reset, due now; by id or for one agency.

    The message id is kept, so an agency that did receive an earlier attempt recognises it.

    Raises:
        ValueError: neither or both of ``delivery_id`` and ``agency`` were given.

    A dead letter whose licence has a later delivery to the same agency is superseded by it instead:
    sent now, the older state would overwrite the newer one at the agency.

    Returns:
        The ids of the deliveries put back (empty when there was no such dead letter).
    """
    if (delivery_id is None) == (agency is None):
        raise ValueError("give exactly one of a delivery id or an agency code")
    now = now or utcnow()
    query = select(Delivery).where(Delivery.state == DeliveryState.DEAD)
    if delivery_id is not None:
        query = query.where(Delivery.id == delivery_id)
    else:
        query = query.where(Delivery.agency_code == agency.upper())
    rows = session.exec(query.order_by(Delivery.id)).all()
    newer = newest_deliveries(session, rows)
    retried = []
    for delivery in rows:
        newest = newer.get((delivery.licence_id, delivery.agency_code), delivery.id)
        if newest > delivery.id:
            # a later state of the licence went to (or waits for) the agency: sent now, this older one
            # would overwrite it there
            delivery.state, delivery.superseded_by, delivery.updated_at = DeliveryState.SUPERSEDED, newest, now
            session.add(delivery)
            continue
        delivery.state, delivery.attempts, delivery.next_attempt_at = DeliveryState.PENDING, 0, now
        delivery.updated_at = now
        session.add(delivery)
        retried.append(delivery.id)
        audit.append(session, actor=actor, action="delivery.retry", subject=f"delivery:{delivery.message_id}",
                     detail={"agency": delivery.agency_code, "id": delivery.id,
                             "last_error": delivery.last_error})  # fmt: skip
    return retried


def newest_deliveries(session: Session, deliveries: Iterable[Delivery]) -> dict[tuple[int, str], int]:
    """``{(licence id, agency): id of the newest delivery}`` for the licences of ``deliveries``.

    A revision recorded later has a higher delivery id (licence writers take turns), so an older
    delivery with a newer sibling must not reach the agency after it.
    """
    licences = {d.licence_id for d in deliveries}
    if not licences:
        return {}
    query = (select(Delivery.licence_id, Delivery.agency_code, sa.func.max(Delivery.id))
             .where(Delivery.licence_id.in_(licences)).group_by(Delivery.licence_id, Delivery.agency_code))  # fmt: skip
    return {(lid, code): newest for lid, code, newest in session.exec(query).all()}


def delivery_counts(session: Session) -> dict[str, dict[str, int]]:
    """``{agency: {state: count}}`` for every agency that has deliveries."""
    rows = session.exec(
        select(Delivery.agency_code, Delivery.state, sa.func.count()).group_by(Delivery.agency_code, Delivery.state)
    ).all()
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for code, state, count in rows:
        counts[code][state] = count
    return dict(counts)


def update_deliveries(session: Session, ids: list[int], same: dict[str, Any], each: dict[str, list], *,
                      attempts: int = 0) -> None:  # fmt: skip
    """Set ``same`` on every delivery of ``ids``, ``each[column][i]`` on the i-th, and add ``attempts``, in one statement.

    PostgreSQL: an UPDATE … FROM the rows of one JSON array, one round trip per batch; the
    executemany before cost a round trip per row, over a third of a push to SCJG. The rows go as
    JSON written by orjson: psycopg's array parameters, one per column, cost 3.7 ms of the push's
    thread per window of 200 (8 µs per timestamp). SQLite runs in the process, where a Core
    executemany costs no round trips. (A CASE per column was slower: SQLAlchemy compiled its
    hundreds of bind parameters for every batch.)
    """
    postgres = session.get_bind().dialect.name == "postgresql"
    statement = _by_id(postgres, tuple(same), tuple(each), attempts)
    fixed = {f"v_{name}": value for name, value in same.items()}
    if postgres:
        rows = orjson.dumps(list(zip(ids, *each.values(), strict=True))).decode("utf-8")
        params: dict | list = {**fixed, "a_id": ids, "a_rows": rows}
    else:
        params = [{**fixed, "a_id": id_, **{f"a_{name}": values[i] for name, values in each.items()}}
                  for i, id_ in enumerate(ids)]  # fmt: skip
    session.connection().execute(statement, params)


@functools.cache
def _by_id(postgres: bool, fixed: tuple[str, ...], each: tuple[str, ...], attempts: int) -> sa.Update:
    """The statement of update_deliveries, built once per shape: built per batch, its construction and
    cache key cost as much CPU as running it."""
    table = Delivery.__table__
    values: dict[str, Any] = {name: sa.bindparam(f"v_{name}", type_=table.c[name].type) for name in fixed}
    if attempts:
        values["attempts"] = table.c.attempts + attempts
    if not postgres:
        each_values = {name: sa.bindparam(f"a_{name}", type_=table.c[name].type) for name in each}
        return table.update().where(table.c.id == sa.bindparam("a_id")).values({**values, **each_values})
    # [[id, each[0], each[1], …], …]: element i of a row, as text, cast to its column's type
    element = sa.func.json_array_elements(sa.cast(sa.bindparam("a_rows", type_=sa.Text), postgresql.JSON))
    row = element.table_valued("value").render_derived(name="r")
    nth = row.c.value.op("->>", return_type=sa.Text)
    rows = sa.select(*(sa.cast(nth(sa.literal_column(str(i))), table.c[name].type).label(name)
                       for i, name in enumerate(("id", *each)))).subquery("v")  # fmt: skip
    ids = sa.bindparam("a_id", type_=postgresql.ARRAY(table.c.id.type))
    # id = ANY(ids) as well: joined to the rows alone, the planner may scan the whole outbox
    return (table.update().where(table.c.id == sa.func.any(ids), table.c.id == rows.c.id)
            .values({**values, **{name: rows.c[name] for name in each}}))  # fmt: skip
