"""Scenario 6: scale-out — push and pull throughput with one and with two Celery worker processes.

Distributed mode as the README runs it: Redis as broker (database 12 of 127.0.0.1:6379, emptied
before and after) and a throw-away PostgreSQL database per run. Four sandbox agencies (the three
REST ones and the SOAP GSJ) serve ``pull`` lazily rendered penalties each and receive the routed
deliveries of ``push`` licence grants. `hub worker --no-beat --concurrency 1` runs as one or as
two real subprocesses; the harness sends one ``hub.sync_agency`` task per agency (push, then
pull, under the agency's one lease — separate push and pull tasks for the same agency would
race for that lease and the loser would skip its work) and times from the send until every
delivery is delivered and every penalty is in the hub.

The agencies are the unit of parallelism (one lease each), so two workers can at best halve
the wall time of four agencies; the sandbox agencies, PostgreSQL and the workers share the
machine's cores, which limits the ratio further. It is measured, not assumed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.measure import Measurement
from bench.synthetic import LazyPenalties, company_name, synthetic_uscc

__all__ = ["BROKER_URL", "SCALEOUT_AGENCIES", "WorkerRun", "broker_available", "run_scaleout"]

REPO = Path(__file__).resolve().parent.parent
BROKER_URL = os.environ.get("HUB_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
SCALEOUT_AGENCIES = ("SCJG", "GAFJ", "JJZD", "GSJ")
_MTLS = ("JJZD", "GSJ")  # their data files demand mutual TLS; the sandbox here speaks plain HTTP
_TLS_TRANSPORT_KEYS = ("ca", "client_cert", "client_key")
READY_TIMEOUT = 90.0
COMPANY_BLOCK = 10_000_000  # agency k penalises companies from (k+1) * COMPANY_BLOCK on: no two share one


class _AgencyPenalties(LazyPenalties):
    """LazyPenalties over a company range of the agency's own.

    Two workers pulling two agencies that penalise the same new company at the same moment both
    INSERT it, and on PostgreSQL the second pull fails with a UniqueViolation on
    uq_companies_uscc (hub.violations._companies_by_uscc, seen in this scenario's first run). The
    beat's next tick would redo that pull, but this harness sends each task once, so the agencies
    here keep to disjoint companies and the measurement is of throughput, not of that race.
    """

    def __init__(self, code: str, count: int, offset: int) -> None:
        super().__init__(code, count)
        self.offset = offset

    def _draft(self, seq: int):
        draft = super()._draft(seq)
        company = self.offset + (seq * 7919) % self.companies
        draft.uscc, draft.subject_name = synthetic_uscc(company), company_name(company)
        return draft


def broker_available() -> bool:
    """Whether Redis answers at BROKER_URL."""
    import redis

    try:
        client = redis.Redis.from_url(BROKER_URL, socket_connect_timeout=2)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


def _flush_broker() -> None:
    import redis

    client = redis.Redis.from_url(BROKER_URL)
    client.flushdb()
    client.close()


def _agency_table(code: str) -> dict[str, Any]:
    from contracts.registry import AGENCIES_DIR

    return tomllib.loads((AGENCIES_DIR / f"{code.lower()}.toml").read_text(encoding="utf-8"))


def _write_agency_files(directory: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    """The agencies' data files with their sandbox endpoints: how a worker in another process finds them."""
    import tomli_w

    directory.mkdir(parents=True, exist_ok=True)
    for code, override in overrides.items():
        data = _agency_table(code)
        for key, value in override.items():
            if value is None:  # TOML has no null: None means "leave the table out"
                data.pop(key, None)
            else:
                data[key] = value
        (directory / f"{code.lower()}.toml").write_text(tomli_w.dumps(data), encoding="utf-8")
    return directory


def _start_agencies(penalties: int, clean: frozenset[str]) -> tuple[dict[str, Any], dict, dict[str, str]]:
    """Start the four agencies; returns (running agencies, data-file overrides, credentials env)."""
    from sandbox.core import AgencyBook
    from sandbox.rest_agencies import REST_DIALECTS, start_rest_agency
    from sandbox.soap_agencies import DIALECTS as SOAP_DIALECTS
    from sandbox.soap_agencies import start_soap_agency

    running: dict[str, Any] = {}
    overrides: dict[str, dict[str, Any]] = {}
    env: dict[str, str] = {}
    try:
        for k, code in enumerate(SCALEOUT_AGENCIES):
            rest = REST_DIALECTS.get(code)
            d = rest or SOAP_DIALECTS[code]
            # clean: the pushed companies get no invented penalties, so the lazy feed stays as it is
            book = AgencyBook(code=code, name=d.name, uscc=d.uscc, malformed_every=0, clean_companies=clean,
                              subject_fields=tuple(d.licence_subject if rest else d.subject_fields),
                              penalties=_AgencyPenalties(code, penalties, (k + 1) * COMPANY_BLOCK))  # type: ignore[arg-type]  # fmt: skip
            agency = start_rest_agency(code, book=book) if rest else start_soap_agency(code, book=book)
            running[code] = agency
            overrides[code] = {"endpoint": agency.endpoint, "schedule_seconds": 3600}
            if code in _MTLS:
                tls = {k: v for k, v in _agency_table(code).get("tls", {}).items() if k not in _TLS_TRANSPORT_KEYS}
                overrides[code]["tls"] = tls or None
            if getattr(agency, "token", None):
                env[f"HUB_{code}_TOKEN"] = agency.token
    except BaseException:
        for agency in running.values():
            agency.stop()
        raise
    return running, overrides, env


class _Worker:
    """`hub worker --no-beat --concurrency 1` in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli", "worker", "--no-beat", "--concurrency", "1"], cwd=REPO, env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def ready(self) -> bool:
        return self.log.exists() and " ready." in self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        """Raise when the worker died or a task failed for good (the harness sends each task once)."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"a worker exited ({self.proc.returncode}):\n{self.tail()}")
        if self.log.exists() and "raised unexpected" in self.log.read_text(errors="replace"):
            raise RuntimeError(f"a task failed:\n{self.tail()}")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(10)


@dataclass
class WorkerRun:
    """One timed run: how many worker processes, what they did, how long it took."""

    workers: int
    delivered: int
    pulled: int
    seconds: float

    def measurement(self) -> Measurement:
        return Measurement(f"{self.workers} worker{'s' if self.workers > 1 else ''}", records=self.delivered + self.pulled,
                           seconds=self.seconds, extra={"delivered": self.delivered, "pulled": self.pulled,
                                                        "agencies": len(SCALEOUT_AGENCIES)})  # fmt: skip


def _progress(engine: sa.Engine) -> tuple[dict[str, int], dict[str, int]]:
    """(deliveries by state, records held per agency: violations + quarantined)."""
    with engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())
        held = dict(conn.execute(sa.text("SELECT source_agency, count(*) FROM violations GROUP BY source_agency")).all())
        for code, n in conn.execute(sa.text("SELECT agency_code, count(*) FROM quarantine GROUP BY agency_code")):
            held[code] = held.get(code, 0) + n
    return {str(k): v for k, v in states.items()}, held


def run_once(db_url: str, workers: int, grants, penalties: int, work: Path, *, timeout: float) -> WorkerRun:
    """One run on a fresh database and fresh agencies with ``workers`` worker processes."""
    from contracts.registry import load_registry
    from hub.db import create_db_engine, migrate, session_scope
    from hub.licences import ensure_agencies, record_grants
    from hub.settings import Settings
    from sync_jobs.celery_app import create_app

    work.mkdir(parents=True, exist_ok=True)
    agencies, overrides, cred_env = _start_agencies(penalties, frozenset(g.uscc for g in grants if g.uscc))
    procs: list[_Worker] = []
    engine = create_db_engine(db_url)
    try:
        agencies_dir = _write_agency_files(work / "agencies", overrides)
        registry = load_registry(agencies_dir)
        migrate(engine)
        with session_scope(engine) as session:
            ensure_agencies(session, registry.values())
            record_grants(session, grants, registry, actor="bench")
        expected = sum(_progress(engine)[0].values())
        _flush_broker()
        env = {**os.environ, **cred_env, "HUB_DATABASE_URL": db_url, "HUB_BROKER_URL": BROKER_URL,
               "HUB_AGENCIES_DIR": str(agencies_dir), "HUB_DATA_DIR": str(work / "var"),
               "HUB_PKI_DIR": str(work / "no-pki"), "PYTHONPATH": str(REPO)}  # fmt: skip
        procs = [_Worker(env, work / f"worker{i}.log") for i in range(workers)]
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(p.ready() for p in procs):  # startup is not part of the measurement
            for p in procs:
                p.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("workers not ready in time:\n" + "\n".join(p.tail() for p in procs))
            time.sleep(0.1)
        celery = create_app(Settings(broker_url=BROKER_URL, database_url=db_url, agencies_dir=agencies_dir,
                                     data_dir=work / "var"), registry=registry.values())  # fmt: skip
        start = time.perf_counter()
        for code in SCALEOUT_AGENCIES:
            celery.send_task("hub.sync_agency", args=(code,))
        deadline = time.monotonic() + timeout
        while True:
            states, held = _progress(engine)
            if states.get("delivered", 0) == expected and all(held.get(c, 0) >= penalties for c in SCALEOUT_AGENCIES):
                break
            for p in procs:
                p.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"not done within {timeout:.0f}s: deliveries {states}, held {held}\n{procs[0].tail()}")
            time.sleep(0.05)
        seconds = time.perf_counter() - start
        celery.close()
        return WorkerRun(workers, delivered=expected, pulled=sum(held[c] for c in SCALEOUT_AGENCIES), seconds=seconds)
    finally:
        for p in procs:
            p.stop()
        engine.dispose()
        for agency in agencies.values():
            agency.stop()
        _flush_broker()


def run_scaleout(work: Path, grants: int, penalties: int, *, timeout: float = 1800) -> list[WorkerRun]:
    """One run with one worker process and one with two, each on its own fresh PostgreSQL database.

    Args:
        work: scratch directory.
        grants: licence grants recorded (routed to the four agencies as their data files say).
        penalties: penalties each agency serves.
        timeout: seconds one run may take before it is reported as failed.
    """
    from bench.dbs import database
    from bench.push import make_grants

    licences = make_grants(grants)
    runs = []
    for workers in (1, 2):
        with database("postgres", work, f"scaleout{workers}") as url:
            runs.append(run_once(url, workers, licences, penalties, work / f"scaleout-{workers}", timeout=timeout))
    return runs
