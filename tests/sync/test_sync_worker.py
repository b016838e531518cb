"""Acceptance: a real Celery worker (`hub worker`, a subprocess with its beat) on the embedded
default and on Redis + PostgreSQL; killed with SIGKILL mid-push and mid-pull, it loses nothing
and duplicates nothing once restarted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from hub.db import session_scope
from hub.intake import import_licences, read_licence_file
from hub.models import Agency
from hub.runtime import HubRuntime
from hub.settings import Settings
from tests.helpers import REPO
from tests.sync.support import agency_table, deliveries, pulled, record, states, write_agency_files

pytestmark = pytest.mark.slow

SCHEDULE_SECONDS = 5  # the smallest interval an agency data file allows
LEASE_SECONDS = 4  # a killed worker's leases expire quickly


class Worker:
    """`hub worker` in its own process group, so SIGKILL takes its pool and its beat down with it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log, self.proc = env, log, None

    def start(self) -> "Worker":
        out = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "worker", "--concurrency", "2"], cwd=REPO,
                                     env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        out.close()
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def wait_until(condition, worker: Worker, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited ({worker.proc.returncode}) while waiting for {what}:\n{worker.tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f}s; worker log:\n{worker.tail()}")
        time.sleep(0.2)


def worker_env(tmp_path: Path, *, db_url: str, broker_url: str | None, overrides: dict, env: dict) -> dict[str, str]:
    agencies = write_agency_files(tmp_path / "agencies", overrides, schedule_seconds=SCHEDULE_SECONDS)
    result = {**os.environ, **env, "HUB_DATABASE_URL": db_url, "HUB_DATA_DIR": str(tmp_path / "var"),
              "HUB_AGENCIES_DIR": str(agencies), "HUB_LEASE_SECONDS": str(LEASE_SECONDS),
              "HUB_PKI_DIR": str(tmp_path / "no-pki")}  # fmt: skip
    result.pop("HUB_BROKER_URL", None)
    if broker_url:
        result["HUB_BROKER_URL"] = broker_url
    return result


def runtime_for(env: dict[str, str]) -> HubRuntime:
    runtime = HubRuntime(Settings(database_url=env["HUB_DATABASE_URL"], data_dir=Path(env["HUB_DATA_DIR"]),
                                  agencies_dir=Path(env["HUB_AGENCIES_DIR"])))  # fmt: skip
    runtime.init_database()
    return runtime


BROKER_DB = 11  # a Redis database of these tests' own: other suites use the default one


@pytest.fixture
def broker(redis_url):
    """A Redis database of its own for the broker, emptied before and after."""
    import redis

    redis_url = redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield redis_url
    client.flushdb()
    client.close()


def everything_pulled(engine, code: str, book) -> bool:
    ids, refs, _ = pulled(engine, code)
    return len(ids) + len(refs) >= len(book.penalties) > 0


def sync_one_agency_through_a_worker(tmp_path, start_agency, broker_url: str | None):
    """Five grants for SCJG, a real `hub worker` on ``broker_url`` (SQLite database): push and pull complete."""
    agency = start_agency("SCJG")
    env = worker_env(tmp_path, db_url=f"sqlite:///{tmp_path / 'hub.sqlite3'}", broker_url=broker_url,
                     overrides={"SCJG": {"endpoint": agency.endpoint}}, env={"HUB_SCJG_TOKEN": agency.token})  # fmt: skip
    runtime = runtime_for(env)
    record(runtime.engine, runtime.registry, range(1, 6))
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: states(runtime.engine, "SCJG") == {"delivered": 5}, worker, "deliveries")
        wait_until(lambda: everything_pulled(runtime.engine, "SCJG", agency.book), worker, "pulled violations")
    finally:
        worker.kill()
        runtime.dispose()
    assert len(agency.book.received) == 5
    return worker


def test_embedded_worker_needs_no_server(tmp_path, start_agency):
    """`hub worker` with no HUB_BROKER_URL: the broker is a SQLite file, the database too."""
    sync_one_agency_through_a_worker(tmp_path, start_agency, None)
    assert (tmp_path / "var" / "broker.sqlite3").exists()


def test_worker_on_redis_and_postgres_syncs_all_seven_agencies(tmp_path, pg_url, broker, sample_licences):
    from sandbox.cluster import start_sandbox

    sandbox = start_sandbox(tmp_path / "sandbox")
    env = worker_env(tmp_path, db_url=pg_url, broker_url=broker, overrides=sandbox.overrides, env=sandbox.env)
    runtime = runtime_for(env)
    with session_scope(runtime.engine) as session:
        import_licences(session, read_licence_file(sample_licences), runtime.registry, actor="test")
    routed = {code: len(deliveries(runtime.engine, code)) for code in sandbox.agencies}
    assert all(routed.values()), routed
    worker = Worker(env, tmp_path / "worker.log").start()

    def all_synced() -> bool:
        if states(runtime.engine) != {"delivered": sum(routed.values())}:
            return False
        with Session(runtime.engine) as session:
            return all(a.last_pull_at for a in session.exec(select(Agency)).all())

    try:
        wait_until(all_synced, worker, "a push and a pull for all seven agencies", timeout=240)
        for code, book in sandbox.books.items():
            wait_until(lambda: everything_pulled(runtime.engine, code, book), worker, f"{code}'s violations")
    finally:
        worker.kill()
        sandbox.stop()
        runtime.dispose()
    for code, book in sandbox.books.items():
        assert len(book.received) == routed[code], code
        ids, refs, _ = pulled(runtime.engine, code)
        assert len(ids) == len(set(ids)) and len(refs) == len(set(refs)), code


def cursor_not_ahead(engine, book) -> None:
    """Every penalty up to the stored cursor is in the hub, as a violation or in quarantine."""
    ids, refs, position = pulled(engine, book.code)
    held = set(ids) | set(refs)
    missing = [p.record_id for p in book.penalties[:position] if p.record_id not in held]
    assert not missing, f"cursor {position} is ahead of its data: {missing}"
    assert len(refs) == len(set(refs))


@pytest.mark.parametrize("kills", [
    # (gate in the agency where the worker is killed, requests let through first)
    [("before_receive", 0), ("after_receive", 0), ("after_receive", 3), ("fetch", 0), ("fetch", 2)],
])  # fmt: skip
def test_worker_killed_mid_push_and_mid_pull_loses_and_duplicates_nothing(tmp_path, pg_url, broker, start_agency,
                                                                          kills):  # fmt: skip
    agency = start_agency("SCJG", malformed_every=4)
    transport = {**agency_table("SCJG")["rest"], "page_size": 3}
    overrides = {"SCJG": {"endpoint": agency.endpoint, "transport": transport, "batch_size": 4}}
    env = worker_env(tmp_path, db_url=pg_url, broker_url=broker, overrides=overrides,
                     env={"HUB_SCJG_TOKEN": agency.token})  # fmt: skip
    runtime = runtime_for(env)
    record(runtime.engine, runtime.registry, range(1, 13))
    book = agency.book
    for point, skip in kills:
        if point == "fetch":  # pulls need penalties, which the agency invents for licences it received
            assert book.penalties
        gate = book.arm(point, skip=skip)
        worker = Worker(env, tmp_path / "worker.log").start()
        try:
            wait_until(gate.reached.is_set, worker, f"the worker at {point} (after {skip})")
        finally:
            worker.kill()
            gate.release.set()
        cursor_not_ahead(runtime.engine, book)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: states(runtime.engine, "SCJG") == {"delivered": 12}, worker, "all deliveries")
        wait_until(lambda: everything_pulled(runtime.engine, "SCJG", book), worker, "every violation")
    finally:
        worker.kill()
        runtime.dispose()
    # each licence recorded exactly once by the agency, under its message id
    rows = deliveries(runtime.engine, "SCJG")
    assert len(book.received) == 12 and {d.message_id for d in rows} == set(book.received)
    assert len({p["decisionNo"] for p in book.licences()}) == 12
    assert any(r.times_seen > 1 for r in book.received.values())  # resends happened, and were recognised
    # each violation exactly once in the hub; nothing lost; the cursor exactly at the end
    ids, refs, position = pulled(runtime.engine, "SCJG")
    malformed = {p.record_id for p in book.penalties if p.malformation}
    assert sorted(ids) == sorted(p.record_id for p in book.penalties if not p.malformation)
    assert sorted(refs) == sorted(malformed)
    assert position == len(book.penalties)
