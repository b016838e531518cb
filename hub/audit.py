"""The append-only, hash-chained exchange and audit log.

Each entry's hash is SHA-256 over the previous entry's hash and the entry's own content in
canonical JSON, so altering, inserting or deleting any entry breaks every later link.
Writers are serialised (SQLite: BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory
lock) so two workers never chain onto the same predecessor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from adapters.base import as_json_values, canonical_json
from hub.clock import utcnow
from hub.models import AuditEntry
from hub.pipelined import pipelines

GENESIS = "0" * 64
_ADVISORY_KEY = 0x5348_4755  # 'SHGU'

__all__ = ["GENESIS", "ChainBreak", "append", "append_many", "entry_hash", "stamp_of", "verify_chain"]


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
           detail: dict[str, Any] | None = None, payload_digest: str | None = None, commit: bool = False) -> int:  # fmt: skip
    """Append one entry in the caller's transaction (it commits with the change it records); its id.

    ``commit``: commit the transaction with this entry as its last statement (see append_many).
    """
    return append_many(session, [{"actor": actor, "action": action, "subject": subject, "detail": detail,
                                  "payload_digest": payload_digest}], commit=commit)[0]  # fmt: skip


# built once: a reviewer's every history and check appends an entry, and building these per call
# was a visible part of a request (the log is append-only, so nobody needs the ORM objects back)
_TABLE = AuditEntry.__table__
_LAST_HASH = sa.select(_TABLE.c.entry_hash).order_by(_TABLE.c.id.desc()).limit(1)
_INSERT = sa.insert(_TABLE).returning(_TABLE.c.id, sort_by_parameter_order=True)
_LOCK = sa.text("SELECT pg_advisory_xact_lock(:k)")
_PG_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_PG_LAST_HASH = f"SELECT entry_hash FROM {_TABLE.name} ORDER BY id DESC LIMIT 1"


def _chain_head(conn: sa.Connection) -> str:
    """The last entry's hash, read while holding the writers' lock (until the transaction ends)."""
    if conn.dialect.name != "postgresql":
        return conn.execute(_LAST_HASH).scalar() or GENESIS  # SQLite: BEGIN IMMEDIATE holds the write lock
    if conn.dialect.driver != "psycopg":
        conn.execute(_LOCK, {"k": _ADVISORY_KEY})
        return conn.execute(_LAST_HASH).scalar() or GENESIS
    # Two statements, one round trip (a psycopg pipeline): a reviewer's check waited on three round
    # trips to the server for its audit entry, and on a busy machine each is a scheduler wake-up.
    # Still two statements: under READ COMMITTED each takes its snapshot when it starts, so the read,
    # started once the lock is granted, sees the entry of whoever held the lock before; one statement
    # doing both would have taken its snapshot before waiting and could chain onto a stale head.
    dbapi = conn.dialect.loaded_dbapi
    pg = conn.connection.driver_connection
    try:
        with pg.cursor() as lock, pg.cursor() as head:
            with pg.pipeline():
                lock.execute(_PG_LOCK, (_ADVISORY_KEY,))
                head.execute(_PG_LAST_HASH)
            row = head.fetchone()
    except dbapi.Error as exc:  # what the callers catch, as for any statement sent through SQLAlchemy
        raise sa.exc.DBAPIError.instance(_PG_LAST_HASH, None, exc, dbapi.Error) from exc
    return row[0] if row else GENESIS


def append_many(session: Session, entries: list[dict[str, Any]], *, commit: bool = False) -> list[int]:
    """Append several entries, chained in order, in the caller's transaction.

    The last hash is read once, under the writers' lock, for all of them: the same chain as
    that many ``append`` calls, without a round trip per entry.

    Args:
        session: the caller's session; the entries commit with the change they record.
        entries: dicts with the keyword arguments of ``append`` (actor, action, subject, and
            optionally detail and payload_digest).
        commit: then commit the session (a reviewer's lookup, whose last write is its audit
            entry). On psycopg the INSERT and the COMMIT share one round trip.

    Returns:
        The new entries' ids, in order.
    """
    if not entries:
        if commit:
            session.commit()
        return []
    session.flush()  # the caller's pending rows go first, as when each entry was flushed with them
    conn = session.connection()
    prev = _chain_head(conn)
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
    if commit and pipelines(conn) and len(rows) == 1:
        ids = [_insert_and_commit(conn, rows[0])]
        session.commit()  # the session's bookkeeping: the driver's transaction is already committed
        return ids
    # a Core INSERT … RETURNING: the ORM unit of work per entry cost more than the entry's hash
    ids = list(conn.execute(_INSERT, rows).scalars().all())
    if commit:
        session.commit()
    return ids


def _insert_and_commit(conn: sa.Connection, row: dict[str, Any]) -> int:
    """One entry's INSERT and the transaction's COMMIT in one round trip (a psycopg pipeline).

    A failed COMMIT ends the transaction on the server, as any failed COMMIT does; the error is
    raised as SQLAlchemy's, so the caller's session rolls back as after any failed statement.
    """
    dialect = conn.dialect
    compiled = _INSERT.compile(dialect=dialect, column_keys=list(row))
    params = compiled.construct_params(row)
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None and name in params:
            params[name] = process(params[name])
    pg = conn.connection.driver_connection
    try:
        with pg.cursor() as insert, pg.cursor() as end:
            # COMMIT as a statement in the pipeline: connection.commit() would wait for its own sync
            with pg.pipeline():
                insert.execute(compiled.string, params)
                end.execute("COMMIT")
            return insert.fetchone()[0]
    except dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(compiled.string, None, exc, dialect.loaded_dbapi.Error) from exc


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
