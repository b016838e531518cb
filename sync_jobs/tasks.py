"""Thin tasks: each takes ids only and calls one function in hub.jobs. The logic is tested without Celery.

Retry policy (declared on HubTask): only TransientError is retried at job level, after
hub.sync.backoff_delay (exponential, jittered, never shorter than the peer's Retry-After), capped
at MAX_RETRY_DELAY so it stays under the broker's visibility timeout: a Retry-After beyond that cap
brings the job back sooner, but each delivery's own next attempt still waits for it. A few job retries are
enough: the beat runs every agency again at its interval anyway, and the *delivery* attempts that
decide when a licence goes dead are counted in the database. LeaseLost never gets here (the job
ends quietly), and fatal or configuration errors fail the task for an operator to see.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Task

from hub.errors import TransientError
from hub.jobs import check_certificates_job, pull_job, push_job, sweep_job, sync_job
from hub.runtime import HubRuntime
from hub.sync import backoff_delay
from sync_jobs.celery_app import MAX_RETRY_DELAY, app

__all__ = ["check_certificates_task", "pull_agency_task", "push_agency_task", "sweep_task", "sync_agency_task"]

_runtime: HubRuntime | None = None


def runtime() -> HubRuntime:
    """This worker process's runtime, built on first use (after the pool has forked)."""
    global _runtime
    if _runtime is None:
        _runtime = HubRuntime(app.hub_settings)
    return _runtime


class HubTask(Task):
    """Late ack, requeue on worker loss, and retry on TransientError only."""

    acks_late = True
    reject_on_worker_lost = True
    retry_for: tuple[type[Exception], ...] = (TransientError,)
    max_retries = 5
    retry_base_seconds = 15.0
    retry_max_delay = MAX_RETRY_DELAY

    def run_job(self, job: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        try:
            return job(runtime(), *args)
        except self.retry_for as exc:
            delay = backoff_delay(self.request.retries + 1, self.retry_base_seconds,
                                  retry_after=getattr(exc, "retry_after", None))  # fmt: skip
            # expires=None: a beat entry's expiry is for its tick, not for the retry it led to
            raise self.retry(exc=exc, countdown=min(delay, self.retry_max_delay), expires=None) from exc


@app.task(bind=True, base=HubTask, name="hub.push_agency")
def push_agency_task(self: HubTask, code: str) -> dict[str, Any]:
    """Push the due deliveries of agency ``code``."""
    return self.run_job(push_job, code)


@app.task(bind=True, base=HubTask, name="hub.pull_agency")
def pull_agency_task(self: HubTask, code: str) -> dict[str, Any]:
    """Pull new violation records from agency ``code``."""
    return self.run_job(pull_job, code)


@app.task(bind=True, base=HubTask, name="hub.sync_agency")
def sync_agency_task(self: HubTask, code: str) -> dict[str, Any]:
    """Push, then pull, for agency ``code`` (the beat's entry for each agency)."""
    return self.run_job(sync_job, code)


@app.task(bind=True, base=HubTask, name="hub.sweep", max_retries=0)
def sweep_task(self: HubTask) -> dict[str, Any]:
    """Return deliveries stranded in *sending* by a dead worker to the queue."""
    return self.run_job(sweep_job)


@app.task(bind=True, base=HubTask, name="hub.check_certificates", max_retries=0)
def check_certificates_task(self: HubTask) -> dict[str, Any]:
    """Log certificates that are close to expiry."""
    return self.run_job(check_certificates_job)
