"""Scenario 3: licence grants pushed to sandbox agencies (REST batches, SOAP, file drop) vs a bare loop.

The hub side records the grants (routing creates the outbox rows; not timed), then times
hub.sync.push_agency per agency: claim, map, send, store receipts, audit. The baseline is
the sandbox's ceiling: the very same OutboundMessages sent by a bare loop straight through
each adapter (no database, no outbox, no receipts stored) to a fresh sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.measure import Measurement, timed
from bench.synthetic import company_name, synthetic_uscc
from contracts.records import LicenceGrant

__all__ = ["PUSH_AGENCIES", "make_grants", "run_push"]

PUSH_AGENCIES = ("SCJG", "GSJ", "GHFJ")  # one REST (batches), one SOAP, one file drop; all receive every grant
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


def _adapters(sandbox, work: Path, codes):
    from adapters import AdapterContext, build_adapter
    from contracts.registry import load_registry

    overrides = {code: dict(table) for code, table in sandbox.overrides.items()}
    for code, spec in load_registry(overrides=sandbox.overrides).items():
        if spec.protocol == "filedrop" and code in overrides:
            # look for the receipt at the sandbox's pace (it answers within 50 ms), not at the data
            # file's 5 s meant for a real VPN share: otherwise both sides measure only the waiting
            overrides[code]["transport"] = {**overrides[code].get("transport", {}), "poll_interval": 0.02}
    registry = load_registry(overrides=overrides)
    out = {}
    for code in codes:
        (work / code).mkdir(parents=True, exist_ok=True)
        secret = sandbox.env.get(f"HUB_{code}_TOKEN") or sandbox.env.get(f"HUB_{code}_SFTP_KEY")
        out[code] = build_adapter(registry[code], AdapterContext(work_dir=work / code, secret=secret))
    return registry, out


def run_push(url: str, count: int, work: Path) -> list[tuple[Measurement, Measurement]]:
    """Per agency: (hub push, bare-loop ceiling) over ``count`` grants."""
    from contracts.mapping import licence_to_native
    from adapters.base import OutboundMessage
    from hub.db import create_db_engine, migrate, session_scope
    from hub.licences import record_grants
    from hub.routing import route
    from hub.sync import push_agency
    from sandbox.cluster import start_sandbox

    grants = make_grants(count)
    pairs = []
    engine = create_db_engine(url)
    migrate(engine)
    with start_sandbox(work / "hub-sandbox", codes=PUSH_AGENCIES, malformed_every=0) as sandbox:
        registry, adapters = _adapters(sandbox, work / "hub-adapters", PUSH_AGENCIES)
        routed = {code: registry[code] for code in PUSH_AGENCIES}
        with session_scope(engine) as session:
            record_grants(session, grants, routed, actor="bench")
        hub_side = {}
        for code in PUSH_AGENCIES:
            with timed() as t:
                result = push_agency(engine, registry[code], adapters[code])
            hub_side[code] = Measurement(f"hub push {code}", records=result.delivered, seconds=t.seconds,
                                         extra={"retrying": result.retrying, "dead": result.dead})  # fmt: skip
    engine.dispose()
    with start_sandbox(work / "bare-sandbox", codes=PUSH_AGENCIES, malformed_every=0) as sandbox:
        registry, adapters = _adapters(sandbox, work / "bare-adapters", PUSH_AGENCIES)
        for code in PUSH_AGENCIES:
            spec = registry[code]
            messages = [OutboundMessage(f"bench-{code}-{i}", g.decision_no, licence_to_native(g, spec.licence_mapping))
                        for i, g in enumerate(grants) if route(g, [spec])]  # the hub's routing, so both send the same  # fmt: skip
            sent = 0
            with timed() as t:
                for start in range(0, len(messages), spec.batch_size):
                    sent += len(adapters[code].deliver(messages[start : start + spec.batch_size]))
            bare = Measurement(f"bare loop {code}", records=sent, seconds=t.seconds,
                               note=f"same messages, adapter.deliver in batches of {spec.batch_size}, no DB")  # fmt: skip
            pairs.append((hub_side[code], bare))
    return pairs
