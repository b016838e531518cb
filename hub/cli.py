"""The `hub` command line. Each command reads Settings once and calls one function in hub/."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from hub.cli_errors import fail as _fail, handles_errors
from hub.cli_audit import audit_app
from hub.cli_certs import certs_app
from hub.runtime import HubRuntime
from hub.settings import Settings

app = typer.Typer(help="Shenguan Hub: licences out to agencies, violations back to reviewers.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
licences_app = typer.Typer(help="Record licence grants from the approval system.", no_args_is_help=True)
contracts_app = typer.Typer(help="The canonical record contracts.", no_args_is_help=True)
app.add_typer(licences_app, name="licences")
app.add_typer(contracts_app, name="contracts")
app.add_typer(certs_app, name="certs")
app.add_typer(audit_app, name="audit")


def _runtime() -> HubRuntime:
    return HubRuntime(Settings())


@app.command()
@handles_errors
def init() -> None:
    """Create the database or upgrade it to the newest schema, and load the agency registry."""
    runtime = _runtime()
    runtime.init_database()
    typer.echo(f"database ready: {runtime.settings.database_shown}")
    typer.echo(f"agencies: {', '.join(runtime.registry)}")


@licences_app.command("import")
@handles_errors
def licences_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines, or CSV with XK_ columns")],
    encoding: Annotated[Optional[str], typer.Option(help="utf-8 or gbk; detected when left out")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="csv or jsonl; from the suffix when left out")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="import the valid records, quarantine the rest")] = False,
) -> None:
    """Import licence grants; a file with any invalid record is refused whole unless --skip-invalid."""
    from hub.db import session_scope
    from hub.intake import import_licences, read_licence_file

    runtime = _runtime()
    runtime.init_database()
    records = read_licence_file(file, encoding=encoding, fmt=fmt)
    with session_scope(runtime.engine) as session, typer.progressbar(
        length=len(records), label=f"recording {file.name}", file=sys.stderr
    ) as bar:
        result = import_licences(session, records, runtime.registry, actor=f"cli:{file.name}",
                                 skip_invalid=skip_invalid, progress=bar.update)  # fmt: skip
    typer.echo(f"{file.name}: {len(records)} records: {result.created} new, {result.changed} changed, "
               f"{result.unchanged} unchanged, {result.quarantined} quarantined; "
               f"{result.deliveries} deliveries queued")  # fmt: skip


@app.command()
@handles_errors
def history(
    key: Annotated[str, typer.Argument(help="USCC, organisation code or registration number")],
    agency: Annotated[Optional[str], typer.Option(help="only this agency's violations (e.g. SCJG)")] = None,
    severity: Annotated[Optional[str], typer.Option(help="only violations of this class: minor, ordinary, serious")] = None,
    since: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="decided on or after")] = None,
    until: Annotated[Optional[datetime], typer.Option(formats=["%Y-%m-%d"], help="decided on or before")] = None,
    include_hidden: Annotated[bool, typer.Option("--all", help="also repaired and expired penalties")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Licences and violations of one company, narrowed as a reviewer narrows them on the web page."""
    from contracts.records import Severity
    from hub.db import session_scope
    from hub.compliance import load_rules
    from hub.history import HistoryFilter, company_history, find_company

    if severity is not None and severity not in {s.value for s in Severity}:
        _fail(f"--severity {severity!r} is not one of {', '.join(s.value for s in Severity)}")
    if since and until and since > until:
        _fail(f"--since {since:%Y-%m-%d} is after --until {until:%Y-%m-%d}")
    filters = HistoryFilter(agency=agency.upper() if agency else None, severity=severity,
                            since=since.date() if since else None, until=until.date() if until else None,
                            include_hidden=include_hidden)  # fmt: skip
    runtime = _runtime()
    runtime.require_database()
    with session_scope(runtime.engine) as session:
        company = find_company(session, key)
        if company is None:
            _fail(f"no company with USCC, organisation code or registration number {key!r}")
        result = company_history(session, company, filters, months=load_rules().publication)
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    typer.echo(render_history(result))


def render_history(h) -> str:
    lines = [f"{h.name}  USCC {h.uscc or '-'}  ({h.category})", f"  licences ({len(h.licences)}):"]
    for lic in h.licences:
        term = "long-term" if lic.valid_to.year == 2099 else f"to {lic.valid_to}"
        lines.append(f"    {lic.decision_date}  {lic.decision_no}  {lic.approval_item}  {lic.lifecycle}  ({term})")
        for d in lic.deliveries:
            ack = f"ack {d.ack_id}" if d.ack_id else (d.last_error or "")
            lines.append(f"        → {d.agency:<6} {d.state:<13} {ack}")
    hidden = f"; {h.hidden} repaired or expired not shown (--all shows them)" if h.hidden else ""
    lines.append(f"  violations ({len(h.violations)}{hidden}):")
    if not h.violations:
        lines.append("    none on record")
    for v in h.violations:
        fine = f"  fine {v.fine_wanyuan} 万元" if v.fine_wanyuan is not None else ""
        lines.append(f"    {v.decision_date}  {v.agency:<6} {v.severity:<8} {'、'.join(v.penalty_types)}{fine}"
                     f"  [{v.decision_no}]")  # fmt: skip
    return "\n".join(lines)


@contracts_app.command("export")
def contracts_export(directory: Annotated[Path, typer.Argument(help="where to write the JSON Schema files")]) -> None:
    """Write the JSON Schema of LicenceGrant and ViolationRecord for partners."""
    from contracts.schema import export_schemas

    for path in export_schemas(directory):
        typer.echo(str(path))


@app.command()
@handles_errors
def sync(
    agency: Annotated[Optional[str], typer.Option(help="one agency code; all when left out")] = None,
    push: Annotated[bool, typer.Option("--push", help="only push deliveries")] = False,
    pull: Annotated[bool, typer.Option("--pull", help="only pull violations")] = False,
) -> None:
    """Run push and pull in this process (the embedded mode)."""
    from hub.operations import sync_agencies

    runtime = _runtime()
    runtime.init_database()
    codes = [runtime.agency(agency).code] if agency else list(runtime.registry)
    failed = False
    steps = sync_agencies(runtime, codes, push=push or not pull, pull=pull or not push)
    with typer.progressbar(steps, label="syncing", file=sys.stderr, show_pos=True) as progress:
        for line, ok in progress:
            typer.echo(line)
            failed |= not ok
    if failed:
        raise typer.Exit(1)


@app.command()
@handles_errors
def demo(
    keep: Annotated[bool, typer.Option(help="keep the demo's data directory afterwards")] = False,
) -> None:
    """Start the sandbox agencies, import the sample grants, run one full sync, print two histories."""
    from hub.demo import run_demo

    sys.exit(run_demo(keep=keep))


from hub import cli_review  # noqa: E402  (reviewer commands: check, serve, tokens)
cli_review.register(app)

from hub import cli_ops  # noqa: E402  (operations: worker, status, dead-letters)
cli_ops.register(app)

from hub import cli_quarantine  # noqa: E402  (quarantine: list, show, retry, dismiss)
cli_quarantine.register(app)


def main() -> None:
    """The console entry point: a hub error no command caught (a bad HUB_* setting, read before
    any command's own handling) is still one line on stderr and exit 1, never a traceback."""
    from hub.errors import HubError

    try:
        app()
    except HubError as exc:
        typer.echo(f"error: {exc.describe()}", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
