"""Scenario 3: licence grants pushed to the seven sandbox agencies vs a bare loop sending the same requests.

The hub side records the grants (routing creates the outbox rows; not timed), then times
hub.push.push_agency per agency: claim, map, send, store receipts, audit. The baseline is
the sandbox's ceiling: the very same OutboundMessages sent by a bare loop straight through
each adapter (no database, no outbox, no receipts stored) to a second sandbox of its own. Each
sandbox runs in a process of its own (bench.served), as the agencies are other machines.
An agency's two sides run one right after the other, so a busy neighbour on the shared
machine weighs on both alike.

Each agency speaks what its data file says (WIRES), on both sides, with a development PKI made
for the run: JJZD and GSJ over mutual TLS; DSJ with WS-Security (a UsernameToken and an X.509
signature on every call, the signature of every answer verified). Routing decides how many
grants each receives: every one for SCJG, GSJ and DSJ, a half for XFZD, a quarter for GAFJ and
JJZD, an eighth for GHFJ. ``limits`` measures an agency over its first N deliveries only.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from bench.measure import Measurement, timed
from bench.served import served
from bench.synthetic import company_name, synthetic_uscc
from contracts.records import LicenceGrant

__all__ = ["ONE_CALL_PER_LICENCE", "PER_CALL_LIMIT", "PUSH_AGENCIES", "WIRES", "make_grants", "run_push"]

#: how each agency is reached, as its data file (and the sandbox, given a PKI) demands
WIRES = {
    "SCJG": "REST batches, bearer token",
    "GAFJ": "REST, a request per licence",
    "JJZD": "REST batches, mutual TLS",
    "GSJ": "SOAP call per licence, mutual TLS",
    "DSJ": "SOAP call per licence, WS-Security",
    "GHFJ": "XML file drop on a share",
    "XFZD": "GBK CSV file drop over SFTP",
}
PUSH_AGENCIES = tuple(WIRES)
ONE_CALL_PER_LICENCE = ("GSJ", "DSJ")  # the slowest ceilings (DSJ also signs and verifies every call)
#: deliveries measured for ONE_CALL_PER_LICENCE when more are routed (python -m bench): all 10^5 of
#: each would take most of an hour on two cores. It shortens the run, not the outbox: their claims
#: still run against every delivery routed to them
PER_CALL_LIMIT = 20_000
SAMPLES = Path(__file__).resolve().parent.parent / "contracts" / "samples" / "licences.jsonl"


def make_grants(count: int) -> list[LicenceGrant]:
    """``count`` valid grants built from the sample file, each with its own decision number and company."""
    samples = [json.loads(line) for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line.strip()]
    grants = []
    for i in range(count):
        data = dict(samples[i % len(samples)])
        data.update({"XK_WSH": f"津南审批许字〔2026〕B{i:07d}号", "XK_XKBH": f"NKB{i:09d}",
                     "XK_XDR_SHXYM": synthetic_uscc(i), "XK_XDR_MC": company_name(i)})  # fmt: skip
        grants.append(LicenceGrant.model_validate(data))
    return grants


def _sandbox(root: Path, codes: tuple[str, ...], pki: Path) -> tuple[Any, SimpleNamespace]:
    """The agencies of one side, started in the process bench.served made for them."""
    from sandbox.cluster import start_sandbox

    box = start_sandbox(root, codes=codes, malformed_every=0, pki_dir=pki)
    return box, SimpleNamespace(overrides=box.overrides, env=box.env)  # what the hub's side reads of it


def _adapters(sandbox, data_dir: Path, pki: Path, codes: Sequence[str]):
    """The registry and adapters as the hub builds them (HubRuntime), pointed at ``sandbox``."""
    from contracts.registry import AGENCIES_DIR, load_registry
    from hub.runtime import HubRuntime
    from hub.settings import Settings

    overrides = {code: dict(table) for code, table in sandbox.overrides.items()}
    for code, spec in load_registry(overrides=sandbox.overrides).items():
        if spec.protocol == "filedrop" and code in overrides:
            # look for the receipt at the sandbox's pace (it answers within 50 ms), not at the data
            # file's 2-5 s meant for a real VPN share: otherwise both sides measure only the waiting
            overrides[code]["transport"] = {**overrides[code].get("transport", {}), "poll_interval": 0.02}
    runtime = HubRuntime(Settings(data_dir=data_dir, pki_dir=pki, agencies_dir=AGENCIES_DIR), overrides=overrides)
    with mock.patch.dict(os.environ, sandbox.env):  # credentials references (env:HUB_…) resolve at construction
        adapters = {code: runtime.adapter_for(code) for code in codes}
    for code, adapter in adapters.items():
        # connect first on both sides (TLS handshakes, SFTP login, the SOAP client's WSDL), untimed
        health = adapter.probe()
        if not health.ok:
            raise RuntimeError(f"sandbox agency {code} is not reachable: {health.detail}")
    return runtime.registry, adapters


def run_push(url: str, count: int, work: Path, *, codes: Sequence[str] = PUSH_AGENCIES,
             limits: Mapping[str, int] | None = None) -> list[tuple[Measurement, Measurement]]:  # fmt: skip
    """Per agency: (hub push, bare-loop ceiling) over the deliveries ``count`` grants route to it.

    Args:
        url: the hub's (empty) database.
        count: grants recorded.
        work: scratch space (sandbox drops, PKI, adapter staging).
        codes: the agencies, in the order measured.
        limits: agency code → measure only its first N deliveries (rounded up to whole batches).
    """
    from adapters.base import OutboundMessage
    from adapters.soap import reset_clients
    from certs.pki import init_pki
    from contracts.mapping import licence_to_native
    from contracts.registry import load_registry
    from hub.db import create_db_engine, migrate, session_scope
    from hub.licences import record_grants
    from hub.routing import route
    from hub.push import push_agency

    limits = limits or {}
    grants = make_grants(count)
    parties = [(spec.code, spec.name_zh) for spec in load_registry().values()]
    pki = init_pki(work / "pki", parties=parties).root
    engine = create_db_engine(url)
    migrate(engine)
    pairs = []
    with ExitStack() as stack:
        stack.callback(engine.dispose)
        stack.callback(reset_clients)  # zeep clients are cached per process, with this run's certificates
        hub_box = stack.enter_context(served(_sandbox, work / "hub-sandbox", tuple(codes), pki))
        bare_box = stack.enter_context(served(_sandbox, work / "bare-sandbox", tuple(codes), pki))
        registry, hub_adapters = _adapters(hub_box, work / "hub-side", pki, codes)
        bare_registry, bare_adapters = _adapters(bare_box, work / "bare-side", pki, codes)
        for adapter in [*hub_adapters.values(), *bare_adapters.values()]:
            stack.callback(adapter.close)
        with session_scope(engine) as session:
            record_grants(session, grants, {code: registry[code] for code in codes}, actor="bench")
        if engine.dialect.name == "postgresql":
            # settle the bulk load, untimed: otherwise autovacuum works through it on the shared cores
            # while the first agencies are measured (grants trickle in over days in service)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE")
        for code in codes:
            spec, bare_spec = registry[code], bare_registry[code]
            routed = [g for g in grants if route(g, [spec])]
            batches = None if code not in limits else math.ceil(limits[code] / spec.batch_size)
            sent = routed if batches is None else routed[: batches * spec.batch_size]
            with timed() as t:
                result = push_agency(engine, spec, hub_adapters[code], max_batches=batches)
            hub = Measurement(f"hub push {code}", records=result.delivered, seconds=t.seconds, note=WIRES[code],
                              extra={"retrying": result.retrying, "dead": result.dead, "routed": len(routed)})  # fmt: skip
            # the hub's mapping, built before the clock starts: the bare loop sends, and only sends
            messages = [OutboundMessage(f"bench-{code}-{i}", g.decision_no,
                                        licence_to_native(g, bare_spec.licence_mapping))
                        for i, g in enumerate(sent)]  # fmt: skip
            delivered = 0
            with timed() as t:
                for start in range(0, len(messages), bare_spec.batch_size):
                    delivered += len(bare_adapters[code].deliver(messages[start : start + bare_spec.batch_size]))
            bare = Measurement(f"bare loop {code}", records=delivered, seconds=t.seconds,
                               note=f"same messages, adapter.deliver in batches of {bare_spec.batch_size}, no DB")  # fmt: skip
            pairs.append((hub, bare))
    return pairs

