"""The scheduled jobs, one function each; the Celery tasks in sync_jobs/ only call these.

Every agency job runs under that agency's lease (hub.leases): when another worker holds it,
the job returns at once with ``skipped`` — the other worker is doing the same work. A lease
lost midway (LeaseLost) ends the job quietly: nothing after the loss was committed.

Results are small JSON-able dicts, because Celery serialises JSON only.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from hub.clock import utcnow
from hub.db import session_scope
from hub.errors import ConfigurationError, HubError, LeaseLost, TransientError
from hub.leases import LeaseFence, holder_name, lease_for
from hub.models import Agency, Delivery, DeliveryState
from hub.outbox import sweep_stale
from hub.runtime import HubRuntime
from hub.push import push_agency
from hub.sync import pull_agency

__all__ = ["check_certificates_job", "pull_job", "push_job", "sweep_job", "sync_job"]

log = logging.getLogger(__name__)


def _next_due_in(runtime: HubRuntime, code: str) -> float | None:
    with session_scope(runtime.engine) as session:
        due = session.exec(
            select(sa.func.min(Delivery.next_attempt_at)).where(
                Delivery.agency_code == code, Delivery.state == DeliveryState.WAITING_RETRY
            )
        ).first()
    if due is None:
        return None
    return max((due - utcnow()).total_seconds(), 0.0)


def _note_error(runtime: HubRuntime, code: str, what: str, exc: HubError) -> None:
    with session_scope(runtime.engine) as session:
        agency = session.get(Agency, code)
        if agency is not None:
            agency.last_error, agency.last_error_at = f"{what}: {exc}"[:2000], utcnow()
            session.add(agency)


def _push(runtime: HubRuntime, code: str, fence: LeaseFence) -> dict[str, Any]:
    spec = runtime.agency(code)
    adapter = runtime.adapter_for(spec.code)
    try:
        result = push_agency(runtime.engine, spec, adapter, fence=fence)
    finally:
        adapter.close()
    report = {"delivered": result.delivered, "duplicates": result.duplicates, "retrying": result.retrying,
              "dead": result.dead, "error": result.error}  # fmt: skip
    if result.error and result.retrying:
        raise TransientError(f"push {spec.code}: {result.error}", retry_after=_next_due_in(runtime, spec.code),
                             report=report)  # fmt: skip
    return report


def _pull(runtime: HubRuntime, code: str, fence: LeaseFence) -> dict[str, Any]:
    spec = runtime.agency(code)
    adapter = runtime.adapter_for(spec.code)
    try:
        result = pull_agency(runtime.engine, spec, adapter, fence=fence)
    except LeaseLost:
        raise
    except HubError as exc:
        _note_error(runtime, spec.code, "pull", exc)
        raise
    finally:
        adapter.close()
    return {"pages": result.pages, "created": result.created, "updated": result.updated,
            "unchanged": result.unchanged, "quarantined": result.quarantined, "cursor": result.cursor}  # fmt: skip


def _leased(runtime: HubRuntime, code: str, holder: str | None, steps) -> dict[str, Any]:
    """Run ``steps`` (push and/or pull) under the agency's lease; a failure is raised once all have run.

    Of several failures the one that needs a person is raised (a FatalError or ConfigurationError
    before a TransientError): the task retries a transient one on its own, and a step that failed
    for good must not be retried out of sight behind it.
    """
    code = runtime.agency(code).code
    report: dict[str, Any] = {"agency": code}
    postponed: HubError | None = None
    with lease_for(runtime.engine, code, seconds=runtime.settings.lease_seconds,
                   holder=holder or holder_name("sync")) as fence:  # fmt: skip
        if fence is None:
            return {**report, "skipped": "another worker holds the lease"}
        for name, step in steps:
            try:
                report[name] = step(runtime, code, fence)
            except LeaseLost as exc:
                log.warning("%s %s stopped: %s", name, code, exc)
                if postponed is not None and not isinstance(postponed, TransientError):
                    raise postponed from None  # the new holder retries the rest; this needs a person
                return {**report, "lease_lost": str(exc)}
            except HubError as exc:
                # a push that failed, even for good (an agency refusing a batch, a mapping gone
                # wrong), must not hold back the pull, nor the pull the push: the verdict would
                # go stale over an outbound problem
                report[name] = {"error": str(exc)}
                if postponed is None or (isinstance(postponed, TransientError) and not isinstance(exc, TransientError)):
                    postponed = exc
    if postponed is not None:
        raise postponed
    return report


def push_job(runtime: HubRuntime, code: str, *, holder: str | None = None) -> dict[str, Any]:
    """Push every due delivery for one agency under its lease.

    Returns ``{"agency": code, "push": {...counts}}``, or ``{"agency": code, "skipped": ...}`` when
    another worker holds the agency.

    Raises:
        TransientError: the agency failed transiently; ``retry_after`` is when the earliest
            delivery is due again (the deliveries' own attempts are already counted in the DB).
        FatalError, ConfigurationError: as hub.push.push_agency.
    """
    return _leased(runtime, code, holder, [("push", _push)])


def pull_job(runtime: HubRuntime, code: str, *, holder: str | None = None) -> dict[str, Any]:
    """Pull new violation records from one agency under its lease, page by page.

    Raises:
        TransientError: the agency failed transiently (pages already committed stay committed).
        FatalError, ConfigurationError: as hub.sync.pull_agency.
    """
    return _leased(runtime, code, holder, [("pull", _pull)])


def sync_job(runtime: HubRuntime, code: str, *, holder: str | None = None) -> dict[str, Any]:
    """Push, then pull, for one agency under one lease: what the beat runs at the agency's interval.

    One job per agency (rather than a push job and a pull job racing for the same lease) means
    neither waits a whole interval because the other held the agency.
    """
    return _leased(runtime, code, holder, [("push", _push), ("pull", _pull)])


def sweep_job(runtime: HubRuntime, *, older_than: dt.timedelta | None = None) -> dict[str, Any]:
    """Requeue deliveries stuck in *sending* for longer than a lease (default) by a dead worker."""
    older_than = older_than or dt.timedelta(seconds=runtime.settings.lease_seconds)
    with session_scope(runtime.engine) as session:
        moved = sweep_stale(session, older_than=older_than)
    if moved:
        log.warning("sweep: %d stale deliveries returned to the queue", moved)
    return {"requeued": moved}


def check_certificates_job(runtime: HubRuntime, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Log every certificate that is close to expiry or expired; report them by name."""
    from certs.lifecycle import Level, cert_status

    try:
        statuses = cert_status(runtime.settings.resolved_pki_dir, now=now)
    except ConfigurationError as exc:
        log.info("certificate check: %s", exc)
        return {"pki": str(exc), "attention": []}
    attention = [s for s in statuses if s.level.needs_attention]  # rotated-out ones are informational
    for status in attention:
        if status.level is Level.UNREADABLE:
            log.error("certificate %s: unreadable: %s", status.name, status.error)
            continue
        level = logging.ERROR if status.level in (Level.CRITICAL, Level.EXPIRED) else logging.WARNING
        log.log(level, "certificate %s: %s, %d days left (%s)", status.name, status.level.value, status.days_left,
                status.not_after.isoformat() if status.not_after else "?")  # fmt: skip
    return {"checked": len(statuses),
            "attention": [{"name": s.name, "level": s.level.value, "days_left": s.days_left, "error": s.error}
                          for s in attention]}  # fmt: skip
