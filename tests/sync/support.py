"""Test tooling for the sync tests: a sandbox agency book with gates, agency data files, grants.

A ``GateBook`` is a sandbox agency's own state with points where a test can hold the agency's
request open (before or after it records a licence, while it serves a page of penalties). That
is how the tests open a window to kill a worker at a known point — at the network seam, never
by touching hub code.
"""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w
from sqlmodel import Session, select

from contracts.records import LicenceGrant
from contracts.registry import AGENCIES_DIR
from hub.db import session_scope
from hub.licences import record_grants
from hub.models import Delivery, QuarantinedRecord, SyncCursor, Violation
from sandbox.core import AgencyBook
from tests.helpers import grant

HOLD_LIMIT = 60.0  # a gate never holds a request longer than this, whatever the test does


@dataclass
class Gate:
    """Holds the agency's request at one point: ``reached`` is set when a request gets there."""

    skip: int = 0  # let this many requests pass first
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


@dataclass
class GateBook(AgencyBook):
    """An AgencyBook whose requests can be held at ``before_fault``, ``before_receive``, ``after_receive`` or ``fetch``."""

    gates: dict[str, Gate] = field(default_factory=dict)

    def arm(self, point: str, skip: int = 0) -> Gate:
        gate = Gate(skip=skip)
        with self._lock:
            self.gates[point] = gate
        return gate

    def release_all(self) -> None:
        with self._lock:
            gates, self.gates = list(self.gates.values()), {}
        for gate in gates:
            gate.release.set()

    def _pass(self, point: str) -> None:
        with self._lock:
            gate = self.gates.get(point)
            if gate is None:
                return
            if gate.skip:
                gate.skip -= 1
                return
            del self.gates[point]
        gate.reached.set()
        gate.release.wait(HOLD_LIMIT)  # outside the lock: other requests go on meanwhile

    def next_fault(self):
        # held here, a request has not yet learnt whether it fails: a test injects the fault meanwhile
        self._pass("before_fault")
        return super().next_fault()

    def receive(self, message_id, payload):
        self._pass("before_receive")
        ack = super().receive(message_id, payload)
        self._pass("after_receive")
        return ack

    def penalties_after(self, seq, limit):
        self._pass("fetch")
        return super().penalties_after(seq, limit)


def gate_book(code: str, **options: Any) -> GateBook:
    """A GateBook dressed as one of the REST agencies (SCJG, GAFJ, JJZD)."""
    from sandbox.rest_dialects import REST_DIALECTS

    d = REST_DIALECTS[code]
    return GateBook(code=code, name=d.name, uscc=d.uscc, subject_fields=d.licence_subject, **options)


def agency_table(code: str) -> dict[str, Any]:
    return tomllib.loads((AGENCIES_DIR / f"{code.lower()}.toml").read_text(encoding="utf-8"))


def write_agency_files(directory: Path, overrides: dict[str, dict[str, Any]], **fields: Any) -> Path:
    """Write the data files of the agencies in ``overrides`` (only those) with the overrides applied.

    ``fields`` (e.g. schedule_seconds=5) are set in every file. This is how a worker in another
    process reaches sandbox agencies: through its HUB_AGENCIES_DIR, as in production.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for code, override in overrides.items():
        data = agency_table(code)
        protocol = data["protocol"]
        for key, value in {**override, **fields}.items():
            data[protocol if key == "transport" else key] = value
        (directory / f"{code.lower()}.toml").write_text(tomli_w.dumps(_without_none(data)), encoding="utf-8")
    return directory


def _without_none(value: Any) -> Any:
    """TOML has no null: a None override means "the default", so the key is left out."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value


def record(engine, registry, numbers) -> None:
    """Record the test grants numbered ``numbers`` (routed as the registry says)."""
    grants = [LicenceGrant.model_validate(grant(n)) for n in numbers]
    with session_scope(engine) as session:
        record_grants(session, grants, registry, actor="test")


def deliveries(engine, code: str | None = None) -> list[Delivery]:
    with Session(engine) as session:
        query = select(Delivery).order_by(Delivery.id)
        if code:
            query = query.where(Delivery.agency_code == code)
        return list(session.exec(query).all())


def states(engine, code: str | None = None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in deliveries(engine, code):
        counts[d.state] = counts.get(d.state, 0) + 1
    return counts


def pulled(engine, code: str) -> tuple[list[str], list[str], int]:
    """(violation record ids, quarantined refs, cursor position) held by the hub for one agency."""
    with Session(engine) as session:
        ids = list(session.exec(select(Violation.agency_record_id).where(Violation.source_agency == code)).all())
        refs = list(session.exec(select(QuarantinedRecord.record_ref).where(QuarantinedRecord.agency_code == code)).all())
        cursor = session.get(SyncCursor, code)
    return ids, refs, cursor.position if cursor else 0
