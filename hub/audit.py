"""The append-only, hash-chained exchange and audit log.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's own content in
canonical JSON, so altering, inserting or deleting any entry breaks every later link.
Writers are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory
lock) so two workers never chain onto the same predecessor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from adapters.base import as_json_values, canonical_json
from hub.clock import utcnow
from hub.models import AuditEntry
from hub.pipelined import pipelines, select_together, write_and_commit

GENESIS = "0" * 64
_ADVISORY_KEY = 0x5348_4755  # 'SHGU'

__all__ = ["GENESIS", "ChainBreak", "LockedHead", "append", "append_many", "entry_hash", "select_with_head", "stamp_of",
           "verify_chain"]


def entry_hash(prev_hash: str, *, at: str, actor: str, action: str, subject: str,
               detail: dict[str, Any], payload_digest: str | None) -> str:  # fmt: skip
    body = canonical_json({"prev": prev_hash, "at": at, "actor": actor, "action": action, "subject": subject,
                           "detail": detail, "payload_digest": payload_digest}, default=str)  # fmt: skip
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _stamp(entry: AuditEntry) -> str:
    return stamp_of(entry.at)


def stamp_of(at) -> str:
    """The exact text of an entry's time that its hash covers."""
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def append(session: Session, *, actor: str, action: str, subject: str,
           detail: dict[str, Any] | None = None, payload_digest: str | None = None, commit: bool = False,
           written_with: Sequence[tuple[sa.Insert, Mapping[str, Any]]] = (), head: LockedHead | None = None) -> int:  # fmt: skip
    """Append one entry in the caller's transaction (it commits with the change it records); its id.

    ``commit``, ``written_with`` and ``head``: see append_many.
    """
    entry = {"actor": actor, "action": action, "subject": subject, "detail": detail, "payload_digest": payload_digest}
    return append_many(session, [entry], commit=commit, written_with=written_with, head=head)[0]


# built once: a reviewer's every history and check appends an entry, and building these per call
# was a visible part of a request (the log is append-only, so nobody needs the ORM objects back)
_TABLE = AuditEntry.__table__
_LAST_HASH = sa.select(_TABLE.c.entry_hash).order_by(_TABLE.c.id.desc()).limit(1)
_INSERT = sa.insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)
_LOCK = sa.select(sa.func.pg_advisory_xact_lock(sa.bindparam("k", type_=sa.BigInteger)))


def _locked_head_reads(conn: sa.Connection) -> list[tuple[sa.Select, dict[str, Any]]]:
    """SELECTs that take the writers' lock and then read the log's last hash (one round trip on psycopg).

    The lock is held until the transaction ends. Two statements, not one: under READ COMMITTED
    each takes its snapshot when it starts, so the read, started once the lock is granted, sees
    the entry of whoever held the lock before; one statement doing both would take its snapshot
    before waiting and could chain onto a stale head. On SQLite, BEGIN IMMEDIATE already holds
    the write lock.
    """
    if conn.dialect.name != "postgresql":
        return [(_LAST_HASH, {})]
    return [(_LOCK, {"k": _ADVISORY_KEY}), (_LAST_HASH, {})]


class LockedHead:
    """The log's last hash, read under the writers' lock, for the next append in the same transaction.

    A head chained onto twice, or in a later transaction, would fork the chain: ``take`` refuses both.
    """

    def __init__(self, prev_hash: str, transaction: sa.RootTransaction | None) -> None:
        self._prev_hash, self._transaction, self._taken = prev_hash, transaction, False

    def take(self, conn: sa.Connection) -> str:
        if self._taken:
            raise ValueError("this audit head was chained onto already; read the head again")
        if self._transaction is None or conn.get_transaction() is not self._transaction:
            raise ValueError("this audit head was read in another transaction; read the head again")
        self._taken = True
        return self._prev_hash


def select_with_head(conn: sa.Connection,
                     reads: Sequence[tuple[sa.Select, Mapping[str, Any]]]) -> tuple[list[list], LockedHead]:  # fmt: skip
    """``select_together(conn, reads)``, with the writers' lock and the log's last hash read after them.

    For a caller that appends right after its reads (a reviewer's lookup): on psycopg the lock and
    the head share the reads' round trip instead of taking one of their own before the entry.
    The lock is then held from these reads, not from the append, until the transaction ends, so
    the caller should append (and commit) straight after. Pass the head to ``append``.
    """
    *results, head = select_together(conn, [*reads, *_locked_head_reads(conn)])
    return results[: len(reads)], LockedHead(head[0][0] if head else GENESIS, conn.get_transaction())


def append_many(session: Session, entries: list[dict[str, Any]], *, commit: bool = False,
                written_with: Sequence[tuple[sa.Insert, Mapping[str, Any]]] = (),
                head: LockedHead | None = None) -> list[int]:  # fmt: skip
    """Append several entries, chained in order, in the caller's transaction.

    The last hash is read once, under the writers' lock, for all of them: the same chain as
    that many ``append`` calls, without a round trip per entry.

    Args:
        session: the caller's session; the entries commit with the change they record.
        entries: dicts with the keyword arguments of ``append`` (actor, action, subject, and
            optionally detail and payload_digest).
        commit: then commit the session (a reviewer's lookup, whose last write is its audit
            entry). On psycopg the INSERT and the COMMIT share one round trip.
        written_with: INSERTs (with their values) of the change the entries record, executed
            after the log's lock is taken and before the entries. With ``commit`` and one entry
            on psycopg they go in the entry's round trip: a check's verdict row costs no wait.
        head: the log's head, read under the lock with the caller's own reads in this
            transaction (``select_with_head``); without it the head is read here.

    Returns:
        The new entries' ids, in order.
    """
    if not entries:
        for statement, values in written_with:
            session.connection().execute(statement, values)
        if commit:
            session.commit()
        return []
    session.flush()  # the caller's pending rows go first, as when each entry was flushed with them
    conn = session.connection()
    if head is None:
        *_, last = select_together(conn, _locked_head_reads(conn))
        prev = last[0][0] if last else GENESIS
    else:
        prev = head.take(conn)
    at = utcnow()
    stamp = stamp_of(at)
    rows = []
    for item in entries:
        actor, action, subject = item["actor"], item["action"], item["subject"]
        digest = item.get("payload_digest")
        detail = as_json_values(item.get("detail") or {})  # hashed as the log will give it back
        entry = {"at": at, "actor": actor, "action": action, "subject": subject, "detail": detail,
                 "payload_digest": digest, "prev_hash": prev}  # fmt: skip
        entry["entry_hash"] = prev = entry_hash(prev, at=stamp, actor=actor, action=action, subject=subject,
                                                detail=detail, payload_digest=digest)  # fmt: skip
        rows.append(entry)
    if commit and len(rows) == 1 and pipelines(conn):
        *_, inserted = write_and_commit(conn, [*written_with, (_INSERT, rows[0])])
        session.commit()  # the session's bookkeeping: the driver's transaction is already committed
        return [inserted[0]]
    for statement, values in written_with:
        conn.execute(statement, values)
    # a Core INSERT … RETURNING: the ORM unit of work per entry cost more than the entry's hash
    ids = list(conn.execute(_INSERT, rows).scalars().all())
    if commit:
        session.commit()
    return ids


@dataclass(frozen=True)
class ChainBreak:
    entry_id: int
    reason: str


def verify_chain(session: Session, *, batch: int = 5000) -> tuple[int, ChainBreak | None]:
    """Walk the whole log in id order; return (entries checked, the first break or None)."""
    prev, checked, after = GENESIS, 0, 0
    while True:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id).limit(batch)
        ).all()
        if not rows:
            return checked, None
        for entry in rows:
            if entry.prev_hash != prev:
                return checked, ChainBreak(entry.id, "its link to the previous entry is broken (entry removed or inserted)")
            expected = entry_hash(prev, at=_stamp(entry), actor=entry.actor, action=entry.action,
                                  subject=entry.subject, detail=entry.detail,
                                  payload_digest=entry.payload_digest)  # fmt: skip
            if expected != entry.entry_hash:
                return checked, ChainBreak(entry.id, "its content was altered after it was written")
            prev, checked, after = entry.entry_hash, checked + 1, entry.id
        session.expunge_all()  # keep memory flat on long logs
