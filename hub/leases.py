"""One sync per agency at a time: a lease row per agency with a fencing token, in the database.

Works the same on SQLite and PostgreSQL because it uses nothing but a conditional UPDATE and,
the first time, an INSERT whose primary key is the arbiter:

* ``acquire`` takes the row when it is free, expired, or already ours, and bumps the fencing
  token; when no row exists yet, the INSERT that wins the primary key wins the lease.
* ``LeaseFence`` is called inside every transaction that writes sync results (see hub.sync and hub.push). It
  locks the row (``FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already serialises
  writers), checks holder and token, and renews the lease when half of it has gone. A worker
  that paused past its lease and lost the row to another finds a different token there and its
  whole transaction is refused with LeaseLost — it cannot overwrite the new holder's work.
* ``lease_for`` also renews the lease from a heartbeat thread while its block runs, because one
  agency call can outlast a lease between two commits: a file-drop push waits minutes for the
  agency's receipt. Without it, a slow agency made the lease expire mid-call, another worker took
  the agency, and each then lost it to the other in turn without ever finishing.
* A worker that dies (or is stopped: the heartbeat stops with it) no longer renews; its lease
  expires after ``seconds``. A worker that hangs keeps its lease until it is killed — the Celery
  hard time limit (sync_jobs.celery_app) bounds that.

Times come from the worker's clock (injectable for tests); keep clocks within a small fraction
of ``lease_seconds`` of each other, and ``lease_seconds`` above the longest single agency call.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hub.clock import utcnow
from hub.db import session_scope
from hub.errors import LeaseLost
from hub.models import SyncLease

log = logging.getLogger(__name__)

__all__ = ["Lease", "LeaseFence", "acquire", "holder_name", "is_live", "lease_for", "release"]

Clock = Callable[[], dt.datetime]


def holder_name(prefix: str = "") -> str:
    """A holder id unique to this process and call: host, pid and a random suffix."""
    base = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return f"{prefix}:{base}" if prefix else base


@dataclass(frozen=True)
class Lease:
    """A lease this worker holds: the token proves it is still the newest holder."""

    agency_code: str
    holder: str
    token: int
    expires_at: dt.datetime


def is_live(row: SyncLease | None, now: dt.datetime) -> bool:
    """Someone holds this lease row and it has not expired."""
    return bool(row and row.holder and row.expires_at and row.expires_at > now)


def _free_or_mine(code: str, holder: str, now: dt.datetime):
    table = SyncLease.__table__
    return sa.and_(
        table.c.agency_code == code,
        sa.or_(table.c.holder.is_(None), table.c.expires_at.is_(None), table.c.expires_at < now,
               table.c.holder == holder),  # fmt: skip
    )


def acquire(engine: Engine, agency_code: str, holder: str, *, seconds: float, now: Clock = utcnow) -> Lease | None:
    """Take the agency's lease for ``seconds`` if nobody else holds a live one.

    Args:
        engine: the hub database.
        agency_code: whose sync to guard.
        holder: this worker's id (see holder_name); unique per sync run.
        seconds: how long the lease lives without renewal.
        now: the clock.

    Returns:
        The lease with its new fencing token, or None when another holder's lease is still live.
    """
    table = SyncLease.__table__
    at = now()
    expires = at + dt.timedelta(seconds=seconds)
    with session_scope(engine) as session:
        taken = session.execute(
            table.update()
            .where(_free_or_mine(agency_code, holder, at))
            .values(holder=holder, fencing_token=table.c.fencing_token + 1, expires_at=expires)
        ).rowcount
        if taken == 1:
            token = session.execute(select(table.c.fencing_token).where(table.c.agency_code == agency_code)).scalar_one()
            return Lease(agency_code, holder, token, expires)
        exists = session.execute(select(table.c.agency_code).where(table.c.agency_code == agency_code)).first()
        if exists:
            return None
    # First sync of this agency ever: whoever inserts the row first holds it.
    try:
        with session_scope(engine) as session:
            session.execute(table.insert().values(agency_code=agency_code, holder=holder, fencing_token=1,
                                                  expires_at=expires))  # fmt: skip
    except sa.exc.IntegrityError:
        return None
    return Lease(agency_code, holder, 1, expires)


def _locked_row(session: Session, agency_code: str) -> SyncLease | None:
    return session.exec(select(SyncLease).where(SyncLease.agency_code == agency_code).with_for_update()).first()


def _update_if_ours(engine: Engine, lease: Lease, **values) -> bool:
    """Set ``values`` on the lease row only while it is still ours, with our token; True if it was."""
    table = SyncLease.__table__
    with session_scope(engine) as session:
        done = session.execute(
            table.update()
            .where(table.c.agency_code == lease.agency_code, table.c.holder == lease.holder,
                   table.c.fencing_token == lease.token)  # fmt: skip
            .values(**values)
        ).rowcount
    return done == 1


def _extend(engine: Engine, lease: Lease, *, seconds: float, now: Clock) -> bool:
    """Push the lease's expiry forward in a transaction of its own; False once it is no longer ours."""
    return _update_if_ours(engine, lease, expires_at=now() + dt.timedelta(seconds=seconds))


class _Heartbeat(threading.Thread):
    """Renews a lease every third of its life until stopped or until the lease is lost."""

    def __init__(self, engine: Engine, lease: Lease, *, seconds: float, now: Clock) -> None:
        super().__init__(name=f"lease-{lease.agency_code}", daemon=True)
        self._engine, self._lease, self._seconds, self._now = engine, lease, seconds, now
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self._seconds / 3):
            try:
                if not _extend(self._engine, self._lease, seconds=self._seconds, now=self._now):
                    return  # taken over: the fence refuses this holder's next commit
            except Exception:  # noqa: BLE001 - a database hiccup: the next beat tries again
                log.warning("lease %s: renewal failed, trying again", self._lease.agency_code, exc_info=True)

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def release(engine: Engine, lease: Lease) -> bool:
    """Give the lease back (only if still ours, with our token). True when it was released."""
    return _update_if_ours(engine, lease, holder=None, expires_at=None)


class LeaseFence:
    """The ``fence(session)`` hook for hub.sync and hub.push: refuses the transaction unless we still hold the lease.

    It renews the lease when less than half of it is left, so a long sync keeps it as long as it
    keeps committing pages or batches.
    """

    def __init__(self, lease: Lease, *, seconds: float, now: Clock = utcnow) -> None:
        self.lease = lease
        self.seconds = seconds
        self._now = now

    def __call__(self, session: Session) -> None:
        at = self._now()
        row = _locked_row(session, self.lease.agency_code)
        if row is None or row.holder != self.lease.holder or row.fencing_token != self.lease.token:
            holder = row.holder if row else None
            raise LeaseLost(f"agency {self.lease.agency_code}: another worker ({holder}) holds the sync now",
                            agency=self.lease.agency_code, holder=holder)  # fmt: skip
        if row.expires_at is None or row.expires_at - at < dt.timedelta(seconds=self.seconds / 2):
            row.expires_at = at + dt.timedelta(seconds=self.seconds)
            session.add(row)
            session.flush()
            self.lease = Lease(self.lease.agency_code, self.lease.holder, self.lease.token, row.expires_at)


@contextmanager
def lease_for(engine: Engine, agency_code: str, *, seconds: float, holder: str | None = None,
              now: Clock = utcnow) -> Iterator[LeaseFence | None]:  # fmt: skip
    """Hold the agency's lease for the duration of the block; yields None when someone else has it.

    While the block runs, a heartbeat thread keeps the lease alive (see the module docstring). The
    lease is released at the end even when the block fails, unless it was lost meanwhile.
    """
    lease = acquire(engine, agency_code, holder or holder_name(), seconds=seconds, now=now)
    if lease is None:
        yield None
        return
    fence = LeaseFence(lease, seconds=seconds, now=now)
    heartbeat = _Heartbeat(engine, lease, seconds=seconds, now=now)
    heartbeat.start()
    try:
        yield fence
    finally:
        heartbeat.stop()
        release(engine, fence.lease)
