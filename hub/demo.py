"""`hub demo`: the main job end to end on the embedded default, against the sandbox on loopback.

Starts the seven simulated agencies, imports the sample grants, pushes every routed delivery,
pulls violations back from all seven, prints two companies' histories (one clean, one with
violations from agencies reached over REST, SOAP and a file drop), then stops all it started.
A development PKI is made in the demo's directory: JJZD (REST) and GSJ (SOAP) are reached over
mutual TLS with it, and DSJ (SOAP) with WS-Security signed by its keys, as their data files demand.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from certs.pki import init_pki
from contracts.registry import AGENCIES_DIR, load_registry
from hub.cli import render_history
from hub.cli_review import render_check
from hub.compliance import load_rules, run_check
from hub.db import session_scope
from hub.history import company_history, find_company
from hub.intake import import_licences, read_licence_file
from hub.operations import sync_agencies
from hub.runtime import HubRuntime
from hub.settings import Settings

SAMPLES = Path(AGENCIES_DIR).parent / "samples" / "licences.jsonl"
CLEAN_COMPANY = "9112010429141777XE"  # 天津南开甲餐饮管理有限公司
PENALISED_COMPANY = "91120104631706691X"  # 天津市南开区乙旅馆有限公司: REST, SOAP and file-drop agencies


def run_demo(*, keep: bool = False, out=print) -> int:
    """Run the demo; returns the process exit code (0 when every step succeeded)."""
    from sandbox.cluster import start_sandbox  # the sandbox is demo/test tooling, not part of the hub

    workdir = Path(tempfile.mkdtemp(prefix="shenguan-demo-"))
    saved_env: dict[str, str | None] = {}
    runtime = None
    try:
        parties = [(spec.code, spec.name_zh) for spec in load_registry().values()]
        pki = init_pki(workdir / "pki", parties=parties)  # both sides trust this one CA
        sandbox = start_sandbox(workdir / "sandbox", clean_companies={CLEAN_COMPANY}, pki_dir=pki.root)
        try:
            saved_env = {key: os.environ.get(key) for key in sandbox.env}
            os.environ.update(sandbox.env)  # credentials references resolve from the environment
            # the shipped agencies, every one of them a sandbox: never a HUB_AGENCIES_DIR's real endpoints
            settings = Settings(data_dir=workdir / "hub", database_url=None, broker_url=None, pki_dir=pki.root,
                                agencies_dir=AGENCIES_DIR)  # fmt: skip
            runtime = HubRuntime(settings, overrides=sandbox.overrides)
            runtime.init_database()
            mtls = ", ".join(code for code in sandbox.agencies if sandbox.overrides[code]["endpoint"].startswith("https"))
            wsse = ", ".join(code for code, spec in runtime.registry.items() if "wsse" in spec.transport)
            out(f"sandbox: {len(sandbox.agencies)} agencies on 127.0.0.1 (mutual TLS: {mtls or 'none'}; "
                f"WS-Security: {wsse or 'none'}); "
                f"hub data in {workdir / 'hub'}")
            records = read_licence_file(SAMPLES)
            with session_scope(runtime.engine) as session:
                result = import_licences(session, records, runtime.registry, actor="demo")
            out(f"imported {result.created} licence grants; {result.deliveries} deliveries queued")
            ok = True
            for line, success in sync_agencies(runtime, runtime.registry, push=True, pull=False):
                out("  " + line)
                ok &= success
            for agency in sandbox.agencies.values():
                if hasattr(agency, "publish"):
                    agency.publish()  # the file-drop agencies' nightly export of their penalties
            for line, success in sync_agencies(runtime, runtime.registry, push=False, pull=True):
                out("  " + line)
                ok &= success
            with session_scope(runtime.engine) as session:
                for uscc in (CLEAN_COMPANY, PENALISED_COMPANY):
                    company = find_company(session, uscc)
                    out("")
                    out(render_history(company_history(session, company)))
                    verdict = run_check(session, company=company, case_id=f"DEMO-{uscc[-6:]}", actor="demo",
                                        rules=load_rules(), agencies=runtime.registry,
                                        freshness_hours=settings.freshness_hours)  # fmt: skip
                    out("  pre-approval check:")
                    out("\n".join("    " + line for line in render_check(verdict).splitlines()[1:]))
            return 0 if ok else 1
        finally:
            sandbox.stop()
    finally:
        if runtime is not None:
            runtime.dispose()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if keep:
            out(f"\nkept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
