"""Exactly one beat: the scheduler sends tasks only while it holds the beat lease in the database.

Start the worker with its embedded beat (`hub worker`) on one machine and `hub worker --no-beat`
on the others. If a second beat is started by mistake, it finds the lease taken and stays idle;
if the active beat's machine dies, its lease expires (HUB_LEASE_SECONDS) and a standby beat takes
over. The lease lives in the same table as the agencies' sync leases, under a name no agency
code can have.
"""

from __future__ import annotations

import datetime as dt
import logging

import sqlalchemy as sa
from celery.beat import PersistentScheduler

from hub.clock import utcnow
from hub.db import create_db_engine
from hub.leases import acquire, holder_name

__all__ = ["BEAT_LEASE", "LeasedScheduler"]

BEAT_LEASE = "_BEAT"  # agency codes start with a letter, so this never collides
IDLE_POLL_SECONDS = 5.0

log = logging.getLogger(__name__)


class LeasedScheduler(PersistentScheduler):
    """Celery's persistent scheduler, active only while it holds the beat lease."""

    def __init__(self, *args, **kwargs) -> None:
        self._holder = holder_name("beat")
        self._held_until: dt.datetime | None = None
        self._engine = None
        super().__init__(*args, **kwargs)

    @property
    def _settings(self):
        return self.app.hub_settings

    def _holds_lease(self) -> bool:
        seconds = self._settings.lease_seconds
        now = utcnow()
        if self._held_until and self._held_until - now > dt.timedelta(seconds=seconds / 2):
            return True
        if self._engine is None:
            self._engine = create_db_engine(self._settings.resolved_database_url)
        try:
            lease = acquire(self._engine, BEAT_LEASE, self._holder, seconds=seconds)
        except sa.exc.SQLAlchemyError as exc:
            log.error("beat: cannot reach the database to hold the beat lease: %s", exc)
            lease = None
        if lease is None:
            if self._held_until is not None:
                log.warning("beat: another beat holds the lease now; this one stays idle")
            self._held_until = None
            return False
        if self._held_until is None:
            log.info("beat: holding the beat lease as %s", self._holder)
        self._held_until = lease.expires_at
        return True

    def tick(self, *args, **kwargs) -> float:
        if not self._holds_lease():
            return min(self.max_interval, IDLE_POLL_SECONDS)
        return super().tick(*args, **kwargs)
