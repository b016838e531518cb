"""The Celery app, built from Settings: broker, reliability settings and the beat schedule.

Embedded default: the broker is kombu's SQLAlchemy transport on a SQLite file next to the
hub database (``sqla+sqlite:///<data_dir>/broker.sqlite3``), so `hub worker` needs no server.
Distributed: HUB_BROKER_URL=redis://… (or amqp://…) and HUB_DATABASE_URL=postgresql://….

Reliability: late acks, prefetch 1 and reject-on-worker-lost, so a task whose worker dies is
given to another worker (Redis/RabbitMQ) instead of being lost; JSON only; soft and hard time
limits; and every broker-side delay (retry countdown) is capped well below the broker's
visibility timeout, so a delayed task is never redelivered while a worker still holds it.
Delivery attempts are counted in the database (hub.push), never by the broker: a task retry
only decides *when* to look again. Everything the tasks do is idempotent and leased per agency
(hub.leases), so a redelivered or duplicated task does no harm.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from celery import Celery

from contracts.registry import AgencySpec, load_registry
from hub.settings import Settings

__all__ = [
    "MAX_RETRY_DELAY",
    "TASK_SOFT_TIME_LIMIT",
    "TASK_TIME_LIMIT",
    "VISIBILITY_TIMEOUT",
    "app",
    "beat_schedule",
    "broker_options",
    "create_app",
]

TASK_SOFT_TIME_LIMIT = 540  # seconds: the task gets SoftTimeLimitExceeded and stops cleanly
TASK_TIME_LIMIT = 600  # seconds: the pool kills it; its lease expires, its work resumes next run
MAX_RETRY_DELAY = 900  # the longest countdown any task retry may ask the broker for
VISIBILITY_TIMEOUT = 3600  # Redis/SQS: an unacked task is redelivered after this long
CERTIFICATE_CHECK_SECONDS = 6 * 3600
QUEUE = "hub"

# A delayed task sits unacked in a worker until its countdown ends; it must not be redelivered
# meanwhile, nor while it then runs to its hard limit.
assert VISIBILITY_TIMEOUT > MAX_RETRY_DELAY + TASK_TIME_LIMIT


def broker_options(url: str) -> dict[str, Any]:
    """Transport options that suit the broker behind ``url``."""
    if url.startswith(("sqla+", "sqlalchemy+")):
        # These options go to sqlalchemy.create_engine: wait for SQLite's write lock instead of
        # failing with "database is locked" when beat and the worker touch the file at once.
        return {"connect_args": {"timeout": 30}} if "sqlite" in url else {}
    return {"visibility_timeout": VISIBILITY_TIMEOUT}


def beat_schedule(registry: Iterable[AgencySpec], *, sweep_seconds: float) -> dict[str, dict[str, Any]]:
    """One entry per agency at its own interval, plus the sweeper and the certificate check.

    The agency entry pushes then pulls under the agency's one lease (separate push and pull
    entries would race for it, and the loser would wait a whole interval). Entries expire after
    their interval, so ticks piled up while no worker ran are dropped, not replayed: the next
    tick does the same work.
    """
    schedule: dict[str, dict[str, Any]] = {}
    for spec in registry:
        every = float(spec.schedule_seconds)
        schedule[f"sync-{spec.code}"] = {"task": "hub.sync_agency", "schedule": timedelta(seconds=every),
                                         "args": (spec.code,), "options": {"expires": every}}  # fmt: skip
    schedule["sweep"] = {"task": "hub.sweep", "schedule": timedelta(seconds=sweep_seconds),
                         "options": {"expires": sweep_seconds}}  # fmt: skip
    schedule["check-certificates"] = {"task": "hub.check_certificates",
                                      "schedule": timedelta(seconds=CERTIFICATE_CHECK_SECONDS),
                                      "options": {"expires": CERTIFICATE_CHECK_SECONDS}}  # fmt: skip
    return schedule


def create_app(settings: Settings | None = None, *, registry: Iterable[AgencySpec] | None = None) -> Celery:
    """The hub's Celery app for ``settings`` (from the environment by default)."""
    settings = settings or Settings()
    specs = list(registry) if registry is not None else list(load_registry(settings.agencies_dir).values())
    broker = settings.resolved_broker_url
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the beat's schedule file (and the embedded broker)
    celery = Celery("shenguan_hub", broker=broker, include=["sync_jobs.tasks"])
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,  # outcomes live in the database (deliveries, cursors, audit log)
        task_soft_time_limit=TASK_SOFT_TIME_LIMIT,
        task_time_limit=TASK_TIME_LIMIT,
        task_default_queue=QUEUE,
        broker_transport_options=broker_options(broker),
        broker_connection_retry_on_startup=True,
        # On a broker connection loss the unacked tasks go back to the queue; stop running them
        # here so they do not run twice at once (the lease would refuse the second anyway).
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone="UTC",
        beat_schedule=beat_schedule(specs, sweep_seconds=settings.lease_seconds),
        beat_scheduler="sync_jobs.beat:LeasedScheduler",
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        # the beat lease (sync_jobs.beat) is renewed at every tick, so ticks come well within it
        beat_max_loop_interval=max(1.0, settings.lease_seconds / 4),
    )
    celery.hub_settings = settings  # the tasks build their HubRuntime from the same settings
    return celery


app = create_app()
