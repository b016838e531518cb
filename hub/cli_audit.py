"""`hub audit`: prove the hash-chained log intact, and export evidence bundles from it.

Mounted by hub/cli.py as ``app.add_typer(audit_app, name="audit")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from hub.cli_errors import fail as _fail
from hub.errors import HubError
from hub.settings import Settings

__all__ = ["audit_app"]

audit_app = typer.Typer(help="The hash-chained exchange and audit log.", no_args_is_help=True)


@audit_app.command("verify")
def verify_command() -> None:
    """Walk the whole log; exit 0 with the count when intact, 1 naming the first altered entry."""
    from hub.audit import verify_chain
    from hub.db import session_scope
    from hub.runtime import HubRuntime

    runtime = HubRuntime(Settings())
    try:
        runtime.require_database()
        with session_scope(runtime.engine) as session:
            checked, broken = verify_chain(session)
    except HubError as exc:
        _fail(exc.describe())
    except Exception as exc:  # noqa: BLE001 - e.g. no database yet: say so, never a traceback
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _fail(f"cannot read the audit log in {runtime.settings.database_shown} ({first_line}); "
              "has `hub init` been run?")
    finally:
        runtime.dispose()
    if broken is not None:
        typer.echo(f"audit chain BROKEN at entry {broken.entry_id}: {broken.reason} "
                   f"({checked} entries before it are intact)", err=True)  # fmt: skip
        raise typer.Exit(1)
    typer.echo(f"audit chain intact: {checked} entries")


@audit_app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help="new (or empty) directory for the bundle")],
    licence: Annotated[Optional[str], typer.Option("--licence", help="the licence's decision number")] = None,
    company: Annotated[Optional[str], typer.Option("--company", help="USCC, organisation code or reg. number")] = None,
) -> None:
    """Write an evidence bundle for one licence or one company; check it with `python -m hub.evidence_verify DIR`."""
    from hub.db import session_scope
    from hub.evidence import export_evidence
    from hub.runtime import HubRuntime

    settings = Settings()
    runtime = HubRuntime(settings)
    try:
        runtime.require_database()
        with session_scope(runtime.engine) as session:
            result = export_evidence(session, directory, licence=licence, company=company,
                                     pki_dir=settings.resolved_pki_dir, exported_by="cli")  # fmt: skip
    except HubError as exc:
        _fail(exc.describe())
    finally:
        runtime.dispose()
    typer.echo(f"evidence bundle in {result.directory}: {result.entries} entries, "
               f"{result.chain_length} chain links, {len(result.files)} files, "
               f"{'signed with the hub signing key' if result.signed else 'UNSIGNED (no PKI signing key)'}")  # fmt: skip
    typer.echo(f"verify it with: python -m hub.evidence_verify {result.directory}")
