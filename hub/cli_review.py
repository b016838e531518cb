"""`hub check`, `hub serve` and `hub tokens add`: the reviewer's and the API's commands.

Mounted by hub/cli.py with ``register(app)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hub.cli_errors import fail as _fail, handles_errors
from hub.errors import ConfigurationError

__all__ = ["register", "render_check"]

tokens_app = typer.Typer(help="API and web access tokens (stored hashed).", no_args_is_help=True)


def render_check(result) -> str:
    """The verdict as a reviewer reads it in a terminal."""
    lines = [f"{result.company}  USCC {result.uscc or '-'}",
             f"case {result.case_id}{'  item ' + result.approval_item if result.approval_item else ''}: "
             f"{result.verdict}   (check #{result.check_id}, rules {result.rules_version}, as of {result.as_of})"]  # fmt: skip
    for r in result.reasons:
        where = " ".join(x for x in (r.agency, r.record) if x)
        lines.append(f"  {r.verdict:<5} {r.rule:<26} {where}  — {r.text}")
    if not result.reasons:
        lines.append("  no counted violation; every agency's data is fresh")
    lines.append(f"freshness (bound {result.freshness_hours:g} h):")
    for f in result.freshness:
        age = "never pulled" if f.last_pull_at is None else f"{f.age_hours:g} h ago"
        lines.append(f"  {f.code:<6} {'STALE' if f.stale else 'fresh':<6} {age}")
    return "\n".join(lines)


@handles_errors
def check(
    key: Annotated[str, typer.Argument(help="USCC, organisation code, registration number or id:<n>")],
    case: Annotated[str, typer.Option("--case", help="the approval case this check is for")],
    item: Annotated[Optional[str], typer.Option("--item", help="approval item applied for")] = None,
    actor: Annotated[str, typer.Option(help="who is checking (recorded with the check)")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Pre-approval verdict (GREEN / AMBER / RED) with every reason; stored and audited."""
    from hub.compliance import load_rules, run_check
    from hub.db import session_scope
    from hub.history import find_company
    from hub.runtime import HubRuntime
    from hub.settings import Settings

    runtime = HubRuntime(Settings())
    runtime.require_database()
    with session_scope(runtime.engine) as session:
        company = find_company(session, key)
        if company is None:
            _fail(f"no company with USCC, organisation code or registration number {key!r}")
        result = run_check(session, company=company, case_id=case, actor=f"cli:{actor}", rules=load_rules(),
                           agencies=runtime.registry, freshness_hours=runtime.settings.freshness_hours,
                           approval_item=item)  # fmt: skip
    typer.echo(result.model_dump_json(indent=2) if as_json else render_check(result))


@handles_errors
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (0: any free port)")] = 8000,
    certfile: Annotated[Optional[Path], typer.Option(help="TLS server certificate (enables HTTPS)")] = None,
    keyfile: Annotated[Optional[Path], typer.Option(help="its private key")] = None,
    client_ca: Annotated[Optional[Path], typer.Option(help="CA for regulators' client certificates")] = None,
    require_client_cert: Annotated[bool, typer.Option(help="refuse TLS clients without a certificate")] = False,
) -> None:
    """Serve the API (OpenAPI at /docs) and the reviewer pages with uvicorn."""
    import uvicorn

    from hub.api import create_app
    from hub.api.tls import ClientCertProtocol
    from hub.logqueue import queued_logging
    from hub.runtime import HubRuntime
    from hub.settings import Settings

    runtime = HubRuntime(Settings())
    app = create_app(runtime)
    options: dict = {}
    if certfile or keyfile:
        if not (certfile and keyfile):
            raise ConfigurationError("--certfile and --keyfile go together")
        from certs.tls import uvicorn_ssl_options

        options = uvicorn_ssl_options(certfile, keyfile, client_ca=client_ca,
                                      require_client_cert=require_client_cert)  # fmt: skip
    if not len(app.state.tokens):
        typer.echo("warning: no API tokens configured (HUB_API_TOKENS_FILE); every request will be refused", err=True)
    level = runtime.settings.log_level
    # uvicorn's start and stop lines (the address it bound) stay at any level. The line per request
    # is the hub's (hub.api.middleware.RequestLog), not uvicorn's: HUB_LOG_LEVEL=WARNING or above
    # leaves it out, for a proxy in front that already logs requests
    with queued_logging(level):
        uvicorn.run(app, host=host, port=port, http=ClientCertProtocol,
                    log_level="debug" if level == "DEBUG" else "info", access_log=False, **options)  # fmt: skip


@tokens_app.command("add")
@handles_errors
def tokens_add(
    name: Annotated[str, typer.Argument(help="who holds the token (shown in the audit log)")],
    role: Annotated[str, typer.Option(help="reviewer, auditor, admin, intake or regulator")],
    agency: Annotated[Optional[str], typer.Option(help="the agency a regulator token acts as")] = None,
    file: Annotated[Optional[Path], typer.Option(help="token file (default: HUB_API_TOKENS_FILE)")] = None,
) -> None:
    """Create a token: it is printed once, only its SHA-256 is stored."""
    from hub.api.auth import Role, add_token
    from hub.settings import Settings

    settings = Settings()
    path = file or settings.api_tokens_file
    if path is None:
        _fail("no token file: pass --file or set HUB_API_TOKENS_FILE")
    if agency:
        # a mistyped code would make a token every request refuses: say so now, not at its first use
        from contracts.registry import load_registry

        known = load_registry(settings.agencies_dir)
        if agency.upper() not in known:
            _fail(f"no agency {agency.upper()!r} in the registry ({settings.agencies_dir or 'contracts/agencies'}); "
                  f"known agencies: {', '.join(known)}")  # fmt: skip
    try:
        token = add_token(path, name=name, role=Role(role), agency=agency.upper() if agency else None)
    except ValueError as exc:
        _fail(str(exc))
    typer.echo(json.dumps({"name": name, "role": role, "agency": agency, "token": token}))


@tokens_app.command("revoke")
def tokens_revoke(
    name: Annotated[str, typer.Argument(help="whose token to revoke")],
    file: Annotated[Optional[Path], typer.Option(help="token file (default: HUB_API_TOKENS_FILE)")] = None,
) -> None:
    """Revoke a token: a running `hub serve` refuses it from its next request (API and web login alike)."""
    from hub.api.auth import revoke_token
    from hub.settings import Settings

    path = file or Settings().api_tokens_file
    if path is None:
        _fail("no token file: pass --file or set HUB_API_TOKENS_FILE")
    if not revoke_token(path, name):
        _fail(f"no token named {name!r} in {path}")
    typer.echo(f"revoked: {name}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `hub` application."""
    app.command("check")(check)
    app.command("serve")(serve)
    app.add_typer(tokens_app, name="tokens")
