"""`hub quarantine list|show|retry|dismiss`: records the contract refused, inspected and resolved.

Mounted by hub/cli.py with ``register(app)``. Exit codes: 0 done; 1 something was not (a record
refused again, an unknown id); 2 the command was used wrongly.
"""

from __future__ import annotations

import json
import os
from typing import Annotated, Optional

import typer

from hub.cli_errors import fail as _fail, handles_errors
from hub.runtime import HubRuntime
from hub.settings import Settings
from hub.status import age

__all__ = ["register"]

quarantine_app = typer.Typer(help="Records the contract refused: list, inspect, retry after a fix, dismiss.",
                             no_args_is_help=True)  # fmt: skip


def _runtime() -> HubRuntime:
    runtime = HubRuntime(Settings())
    runtime.require_database()  # these commands read or fix what is there: never a new, empty database
    return runtime


def _actor() -> str:
    return f"cli:{os.environ.get('USER', '?')}"


def _reason(reason: dict) -> str:
    return f"{reason.get('field')}: {reason.get('reason')}"


@quarantine_app.command("list")
@handles_errors
def list_command(
    agency: Annotated[Optional[str], typer.Option(help="only this agency's records")] = None,
    source: Annotated[Optional[str], typer.Option(help="only records from intake, pull or api")] = None,
    include_released: Annotated[bool, typer.Option("--all", help="also records already released")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Quarantined records, newest first: id, source, agency, record, age and the first reason."""
    from hub.db import session_scope
    from hub.quarantine import SOURCES, list_entries

    if source is not None and source not in SOURCES:
        _fail(f"--source: {source!r} is not one of {', '.join(SOURCES)}", 2)
    runtime = _runtime()
    code = runtime.agency(agency).code if agency else None  # an unknown code is named, not listed as empty
    with session_scope(runtime.engine) as session:
        total, entries = list_entries(session, agency=code, source=source, include_released=include_released)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], ensure_ascii=False, indent=2))
        return
    if not entries:
        typer.echo("no quarantined records" if include_released else "no open quarantined records")
        return
    for e in entries:
        more = f" (+{len(e.reasons) - 1} more)" if len(e.reasons) > 1 else ""
        first = _reason(e.reasons[0]) if e.reasons else "(no reason kept)"
        released = f"  released {e.released_at:%Y-%m-%d %H:%M}" if e.released_at else ""
        typer.echo(f"{e.id:>6}  {e.source:<8} {e.agency or '-':<6} {age(e.age_seconds).removesuffix(' ago'):>5}  {e.record_ref}  "
                   f"{first}{more}{released}")  # fmt: skip
    typer.echo(f"{total} record(s); `hub quarantine show ID` for every reason and the raw record")


@quarantine_app.command("show")
@handles_errors
def show_command(
    qid: Annotated[int, typer.Argument(metavar="ID", help="the record's id (from `hub quarantine list`)")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """One quarantined record: every reason with its field, and the raw payload as it arrived."""
    from hub.db import session_scope
    from hub.quarantine import get_entry

    runtime = _runtime()
    with session_scope(runtime.engine) as session:
        entry = get_entry(session, qid)
    if entry is None:
        _fail(f"no quarantined record {qid}")
    if as_json:
        typer.echo(entry.model_dump_json(indent=2))
        return
    state = f"released {entry.released_at:%Y-%m-%d %H:%M} — {entry.release_note}" if entry.released_at else "open"
    lines = [f"quarantine {entry.id}  {entry.source}  agency {entry.agency or '-'}  {entry.record_ref}",
             f"  refused {entry.created_at:%Y-%m-%d %H:%M} ({age(entry.age_seconds)}); {state}",
             f"  reasons ({len(entry.reasons)}):"]  # fmt: skip
    lines += [f"    {_reason(r)}" for r in entry.reasons]
    lines += ["  raw:", entry.raw or "    (none kept: a whole batch was refused)"]
    typer.echo("\n".join(lines))


@quarantine_app.command("retry")
@handles_errors
def retry_command(
    ids: Annotated[Optional[list[int]], typer.Argument(metavar="ID...", help="records to retry")] = None,
    agency: Annotated[Optional[str], typer.Option(help="every open record of this agency")] = None,
    all_open: Annotated[bool, typer.Option("--all-open", help="every open record")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Run records again through the current agency mapping and contract; stored ones are released.

    Each record is retried in its own transaction. One refused again stays open with its new reasons.
    """
    from hub.db import session_scope
    from hub.quarantine import open_ids, retry

    if sum((bool(ids), agency is not None, all_open)) != 1:
        _fail("give record IDs, --agency CODE or --all-open (one of them)", 2)
    runtime = _runtime()
    registry = runtime.registry
    if ids is None or not ids:
        code = runtime.agency(agency).code if agency else None
        with session_scope(runtime.engine) as session:
            ids = open_ids(session, agency=code)
        if not ids:
            typer.echo(f"no open quarantined records{f' for {code}' if code else ''}")
            return
    outcomes = retry(runtime.engine, ids, registry, actor=_actor())
    if as_json:
        typer.echo(json.dumps([o.model_dump(mode="json") for o in outcomes], ensure_ascii=False, indent=2))
    else:
        for o in outcomes:
            typer.echo(f"{o.id:>6}  {o.result:<8} {o.record_ref}  {o.detail}")
            for r in o.reasons:
                typer.echo(f"          {_reason(r)}")
        stored = sum(o.result == "stored" for o in outcomes)
        typer.echo(f"{stored} of {len(outcomes)} stored and released")
    if any(o.result != "stored" for o in outcomes):
        raise typer.Exit(1)


@quarantine_app.command("dismiss")
@handles_errors
def dismiss_command(
    ids: Annotated[list[int], typer.Argument(metavar="ID...", help="records resolved out of band")],
    reason: Annotated[str, typer.Option("--reason", help="how they were resolved (kept with them and audited)")],
) -> None:
    """Release records an operator resolved another way (the agency re-sent them, they were test data)."""
    from hub.db import session_scope
    from hub.quarantine import dismiss

    if not reason.strip():  # a usage error, before the database is opened
        _fail("--reason: say how the records were resolved", 2)
    runtime = _runtime()
    with session_scope(runtime.engine) as session:
        done = dismiss(session, ids, reason=reason, actor=_actor())
    typer.echo(f"{len(done)} record(s) dismissed: {', '.join(map(str, done))}")


def register(app: typer.Typer) -> None:
    """Add the quarantine commands to the `hub` app."""
    app.add_typer(quarantine_app, name="quarantine")
