"""Operations commands: `hub worker`, `hub status`, `hub dead-letters list|retry`.

Mounted by hub/cli.py with ``register(app)``.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Optional

import typer

from hub.cli_errors import fail as _fail, handles_errors
from hub.errors import ConfigurationError
from hub.runtime import HubRuntime
from hub.settings import Settings

__all__ = ["register"]

dead_letters_app = typer.Typer(help="Deliveries that used up their attempts.", no_args_is_help=True)


def _runtime(*, initialise: bool = False) -> HubRuntime:
    """The runtime; ``initialise`` creates or upgrades the database, else it must be current already."""
    runtime = HubRuntime(Settings())
    if initialise:
        runtime.init_database()
    else:
        runtime.require_database()
    return runtime


@handles_errors
def worker(
    beat: Annotated[bool, typer.Option("--beat/--no-beat", help="also run the scheduler (one machine only)")] = True,
    concurrency: Annotated[int, typer.Option(min=1, help="tasks run at once in this worker")] = 2,
    loglevel: Annotated[
        Optional[str], typer.Option(help="DEBUG, INFO, WARNING or ERROR (default: HUB_LOG_LEVEL)")
    ] = None,
) -> None:
    """Run a Celery worker (with the beat scheduler unless --no-beat) on HUB_BROKER_URL.

    Without HUB_BROKER_URL the broker is a SQLite file in the data directory: no server needed.
    """
    settings = Settings()
    if loglevel is not None and loglevel.strip().upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigurationError(f"--loglevel {loglevel!r}: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    if not beat and not settings.broker_url:
        raise ConfigurationError("--no-beat: this worker takes its tasks from a beat on another machine, which needs "
                                 "a shared HUB_BROKER_URL (Redis or RabbitMQ); the embedded broker is a file here")
    if settings.broker_url and not settings.database_url:
        typer.echo("warning: the broker is shared (HUB_BROKER_URL) but the database is this machine's SQLite file: "
                   "workers elsewhere keep data of their own; set HUB_DATABASE_URL to the shared PostgreSQL", err=True)
    runtime = _runtime(initialise=True)
    runtime.dispose()  # the pool's processes open their own connections after forking
    from sync_jobs.celery_app import QUEUE, app as celery

    level = loglevel.strip().upper() if loglevel else runtime.settings.log_level
    argv = ["worker", f"--loglevel={level}", f"--concurrency={concurrency}", "-Q", QUEUE,
            f"--hostname=hub{os.getpid()}@%h", "--without-mingle", "--without-gossip"]  # fmt: skip
    if beat:
        argv.append("--beat")
    celery.worker_main(argv)


@handles_errors
def status(
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
    agency: Annotated[Optional[str], typer.Option(help="only this agency")] = None,
) -> None:
    """Per agency: last push and pull, lag, deliveries by state, quarantine, lease, certificate expiry."""
    from hub.db import session_scope
    from hub.status import collect_status, render_text

    runtime = _runtime()
    specs = [runtime.agency(agency)] if agency else list(runtime.registry.values())
    with session_scope(runtime.engine) as session:
        result = collect_status(session, specs, pki_dir=runtime.settings.resolved_pki_dir,
                                freshness_hours=runtime.settings.freshness_hours)  # fmt: skip
    typer.echo(result.model_dump_json(indent=2) if as_json else render_text(result))


@dead_letters_app.command("list")
def dead_letters_list(
    agency: Annotated[Optional[str], typer.Option(help="only this agency")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Dead deliveries, oldest first, with their last error."""
    from hub.db import session_scope
    from hub.outbox import list_dead

    runtime = _runtime()
    with session_scope(runtime.engine) as session:
        dead = list_dead(session, agency=agency)
    if as_json:
        typer.echo(json.dumps([d.model_dump(mode="json") for d in dead], ensure_ascii=False, indent=2))
        return
    if not dead:
        typer.echo("no dead letters")
        return
    for d in dead:
        typer.echo(f"{d.id:>6}  {d.agency:<6} {d.decision_no}  {d.attempts} attempts  "
                   f"dead since {d.dead_since:%Y-%m-%d %H:%M}  {d.last_error or ''}")  # fmt: skip


@dead_letters_app.command("retry")
def dead_letters_retry(
    delivery_id: Annotated[Optional[int], typer.Argument(metavar="ID", help="one dead delivery's id")] = None,
    agency: Annotated[Optional[str], typer.Option(help="every dead delivery of this agency")] = None,
) -> None:
    """Send dead deliveries again: attempts reset, due now (the next push delivers them)."""
    from hub.db import session_scope
    from hub.outbox import retry_dead

    if (delivery_id is None) == (agency is None):
        _fail("give a delivery ID or --agency CODE (one of them)", 2)
    runtime = _runtime()
    agency = agency.upper() if agency else None
    with session_scope(runtime.engine) as session:
        ids = retry_dead(session, delivery_id=delivery_id, agency=agency, actor=f"cli:{os.environ.get('USER', '?')}")
    if not ids:
        what = f"dead delivery {delivery_id}" if delivery_id is not None else f"dead deliveries for {agency}"
        _fail(f"no {what} to send again (a dead letter whose licence changed since is superseded instead)")
    typer.echo(f"{len(ids)} delivery(ies) queued again: {', '.join(map(str, ids))}")


def register(app: typer.Typer) -> None:
    """Add the operations commands to the `hub` app."""
    app.command()(worker)
    app.command()(status)
    app.add_typer(dead_letters_app, name="dead-letters")
