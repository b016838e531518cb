"""`hub certs`: create the development PKI, show expiry, rotate a party's certificates.

Mounted by hub/cli.py as ``app.add_typer(certs_app, name="certs")``. Keys are never printed:
only file locations, subjects, serials and dates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from certs.lifecycle import DEFAULT_OVERLAP_DAYS, Level, cert_status, rotate, worst_level
from certs.pki import LEAF_VALIDITY_DAYS, init_pki
from contracts.registry import load_registry
from hub.cli_errors import handles_errors
from hub.settings import Settings

__all__ = ["certs_app"]

certs_app = typer.Typer(help="Development PKI: certificates for the hub and every agency.", no_args_is_help=True)

DirOption = Annotated[
    Optional[Path], typer.Option("--dir", help="PKI directory (default: HUB_PKI_DIR or data_dir/pki)")
]
_MARK = {Level.WARN: "WARNING", Level.CRITICAL: "CRITICAL", Level.EXPIRED: "EXPIRED", Level.UNREADABLE: "UNREADABLE"}


def _directory(directory: Path | None, settings: Settings | None = None) -> Path:
    return directory or (settings or Settings()).resolved_pki_dir


def _parse_party(text: str) -> tuple[str, str]:
    code, _, name = text.partition(":")
    return code.strip(), (name.strip() or code.strip())


@certs_app.command("init")
@handles_errors
def init_command(
    directory: DirOption = None,
    party: Annotated[
        Optional[list[str]], typer.Option("--party", help="extra party CODE or CODE:Organisation (repeatable)")
    ] = None,
    validity_days: Annotated[int, typer.Option(min=1, help="leaf certificate lifetime")] = LEAF_VALIDITY_DAYS,
    force: Annotated[bool, typer.Option("--force", help="re-issue everything, CA included")] = False,
) -> None:
    """Create the CA, the hub's certificates and three per agency/regulator; keep what is still valid."""
    settings = Settings()
    parties = [(spec.code, spec.name_zh) for spec in load_registry(settings.agencies_dir).values()]
    parties += [_parse_party(p) for p in party or []]
    layout = init_pki(_directory(directory, settings), parties=parties, validity_days=validity_days, force=force)
    typer.echo(f"PKI in {layout.root}")
    typer.echo(f"parties: {', '.join(layout.parties)}")
    typer.echo(f"issued: {', '.join(layout.issued) or 'nothing'}")
    if layout.kept:
        typer.echo(f"kept (still valid): {len(layout.kept)} certificate(s)")


@certs_app.command("status")
@handles_errors
def status_command(
    directory: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """List every certificate with its expiry; warn at 30 and 7 days; exit 1 if any has expired or cannot be read.

    Rotated-out certificates are listed as ``retired`` with the end of their overlap: for information.
    """
    statuses = cert_status(_directory(directory))
    if as_json:
        typer.echo(json.dumps([s.to_dict() for s in statuses], ensure_ascii=False, indent=2))
    else:
        width = max(len(s.name) for s in statuses)
        for s in statuses:
            if s.not_after is None:
                typer.echo(f"{s.name:<{width}}  {'-':<10}  {'-':>5}   {s.level.value:<10}  {s.error}")
                continue
            until = f"  accepted until {s.accepted_until:%Y-%m-%d %H:%M}Z" if s.accepted_until else ""
            typer.echo(
                f"{s.name:<{width}}  {s.not_after:%Y-%m-%d}  {s.days_left:>5}d  {s.level.value:<10}  "
                f"{s.serial[:16]}  {s.subject}{until}"
            )
        for s in statuses:
            if s.level is Level.UNREADABLE:
                typer.echo(f"{_MARK[s.level]}: {s.name}: {s.error}", err=True)
            elif s.level.needs_attention:
                typer.echo(f"{_MARK[s.level]}: {s.name} expires {s.not_after:%Y-%m-%d} ({s.days_left} days)", err=True)
    if worst_level(statuses) in (Level.EXPIRED, Level.UNREADABLE):
        raise typer.Exit(1)


@certs_app.command("rotate")
@handles_errors
def rotate_command(
    name: Annotated[str, typer.Argument(help="party (SCJG, hub) or one certificate (SCJG/signing)")],
    directory: DirOption = None,
    overlap_days: Annotated[
        int, typer.Option(min=0, help="days the previous certificate stays accepted")
    ] = DEFAULT_OVERLAP_DAYS,
    validity_days: Annotated[int, typer.Option(min=1, help="new certificate lifetime")] = LEAF_VALIDITY_DAYS,
) -> None:
    """Issue new keys and certificates; the previous ones stay accepted for the overlap period."""
    rotated = rotate(_directory(directory), name, overlap_days=overlap_days, validity_days=validity_days)
    typer.echo(f"rotated: {', '.join(rotated)}; previous certificate(s) accepted for {overlap_days} day(s)")
