"""One sync per agency: leases with fencing tokens, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import threading
import time

import pytest
from sqlmodel import Session

from hub.db import create_db_engine, session_scope
from hub.errors import LeaseLost
from hub.jobs import push_job
from hub.leases import LeaseFence, acquire, holder_name, lease_for, release
from hub.models import SyncLease
from hub.push import push_agency
from hub.sync import pull_agency
from tests.sync.support import deliveries, pulled, record, states

T0 = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.UTC)


def at(seconds: float):
    return lambda: T0 + dt.timedelta(seconds=seconds)


def test_a_live_lease_keeps_others_out_until_it_expires(engine):
    first = acquire(engine, "SCJG", "worker-a", seconds=60, now=at(0))
    assert first is not None and first.token == 1
    assert acquire(engine, "SCJG", "worker-b", seconds=60, now=at(59)) is None
    # worker-a died without releasing: after expiry another worker takes over, with a newer token
    second = acquire(engine, "SCJG", "worker-b", seconds=60, now=at(61))
    assert second is not None and second.token == 2
    assert acquire(engine, "SCJG", "worker-a", seconds=60, now=at(62)) is None


def test_release_frees_the_agency_and_a_stale_release_does_nothing(engine):
    old = acquire(engine, "GSJ", "worker-a", seconds=60, now=at(0))
    new = acquire(engine, "GSJ", "worker-b", seconds=60, now=at(100))
    assert release(engine, old) is False  # worker-a woke up late: it must not free worker-b's lease
    assert acquire(engine, "GSJ", "worker-c", seconds=60, now=at(101)) is None
    assert release(engine, new) is True
    assert acquire(engine, "GSJ", "worker-c", seconds=60, now=at(102)).token == 3


def test_a_long_sync_renews_its_lease_as_it_commits(engine):
    lease = acquire(engine, "SCJG", "worker-a", seconds=60, now=at(0))
    clock = [at(10)]
    fence = LeaseFence(lease, seconds=60, now=lambda: clock[0]())
    for step in (10, 40, 80, 120):  # each commit of a long pull calls the fence
        clock[0] = at(step)
        with session_scope(engine) as session:
            fence(session)
    assert acquire(engine, "SCJG", "worker-b", seconds=60, now=at(150)) is None  # still held (renewed)
    with Session(engine) as session:
        assert session.get(SyncLease, "SCJG").expires_at > T0 + dt.timedelta(seconds=150)


def test_a_lease_outlives_one_agency_call_longer_than_itself(engine):
    """A file-drop push can wait minutes for a receipt with no commit in between: the lease must hold."""
    with lease_for(engine, "XFZD", seconds=0.6, holder="slow-worker") as fence:
        time.sleep(2.0)  # one agency call, three lease lifetimes long
        assert acquire(engine, "XFZD", "eager-worker", seconds=0.6) is None
        with session_scope(engine) as session:
            fence(session)  # the slow worker still commits its results
    assert acquire(engine, "XFZD", "eager-worker", seconds=0.6) is not None  # released at the end


def test_a_stale_holders_commit_is_refused(engine, make_runtime, start_agency):
    agency = start_agency("SCJG")
    runtime = make_runtime(str(engine.url.render_as_string(hide_password=False)),
                           {"SCJG": {"endpoint": agency.endpoint}})  # fmt: skip
    record(runtime.engine, runtime.registry, range(1, 4))
    push_job(runtime, "SCJG")  # SCJG invents penalties for the companies it licensed
    assert agency.book.penalties
    stale = acquire(runtime.engine, "SCJG", "paused-worker", seconds=30, now=at(0))
    # the paused worker's lease expired and another worker took the agency over
    assert acquire(runtime.engine, "SCJG", "other-worker", seconds=30, now=at(31)) is not None
    adapter = runtime.adapter_for("SCJG")
    try:
        with pytest.raises(LeaseLost):
            pull_agency(runtime.engine, runtime.agency("SCJG"), adapter, fence=LeaseFence(stale, seconds=30, now=at(32)))
    finally:
        adapter.close()
    assert pulled(runtime.engine, "SCJG") == ([], [], 0)  # nothing of the refused page was written


def test_a_push_that_loses_its_lease_while_a_batch_is_out_stores_nothing_more(engine, make_runtime, start_agency):
    """The stale worker's receipts are refused with the rest: the new holder resends, and the agency recognises it."""
    agency = start_agency("SCJG")
    runtime = make_runtime(str(engine.url.render_as_string(hide_password=False)),
                           {"SCJG": {"endpoint": agency.endpoint, "batch_size": 2}})  # fmt: skip
    record(runtime.engine, runtime.registry, range(1, 6))
    stale = acquire(runtime.engine, "SCJG", "paused-worker", seconds=30, now=at(0))
    gate = agency.book.arm("before_receive")  # the first batch is held inside the agency
    adapter = runtime.adapter_for("SCJG")
    outcome: list = []

    def push() -> None:
        try:
            outcome.append(push_agency(runtime.engine, runtime.agency("SCJG"), adapter,
                                       fence=LeaseFence(stale, seconds=30, now=at(1)), claim_window=2))  # fmt: skip
        except LeaseLost as exc:
            outcome.append(exc)

    worker = threading.Thread(target=push)
    worker.start()
    try:
        assert gate.reached.wait(30)
        # meanwhile the worker paused past its lease and another took the agency over
        assert acquire(runtime.engine, "SCJG", "other-worker", seconds=30, now=at(31)) is not None
    finally:
        gate.release.set()
        worker.join(30)
        adapter.close()
    assert isinstance(outcome[0], LeaseLost)
    # what it claimed under its lease went out; the agency's answers were not stored, nor anything claimed after
    sent_before = set(agency.book.received)
    assert {d.message_id for d in deliveries(runtime.engine, "SCJG") if d.state == "sending"} == sent_before
    assert "delivered" not in states(runtime.engine, "SCJG") and len(sent_before) in (2, 4)

    assert push_job(runtime, "SCJG")["push"]["delivered"] == 5  # the new holder (its lease from the real clock)
    assert states(runtime.engine, "SCJG") == {"delivered": 5}
    assert {m: r.times_seen for m, r in agency.book.received.items()} == {
        d.message_id: 2 if d.message_id in sent_before else 1 for d in deliveries(runtime.engine, "SCJG")
    }  # the resend recognised as such


def test_two_workers_racing_for_one_agency_only_one_pushes(sqlite_engine, make_runtime, start_agency):
    agency = start_agency("SCJG")
    runtime = make_runtime(str(sqlite_engine.url), {"SCJG": {"endpoint": agency.endpoint}})
    record(runtime.engine, runtime.registry, range(1, 6))
    gate = agency.book.arm("before_receive")  # the first push is held inside the agency
    results = {}
    first = threading.Thread(target=lambda: results.setdefault("first", push_job(runtime, "SCJG")))
    first.start()
    assert gate.reached.wait(20)
    results["second"] = push_job(runtime, "SCJG")  # races while the first holds the agency
    gate.release.set()
    first.join(20)
    assert results["second"] == {"agency": "SCJG", "skipped": "another worker holds the lease"}
    assert results["first"]["push"]["delivered"] == 5
    assert len(agency.book.received) == 5
    assert all(r.times_seen == 1 for r in agency.book.received.values())
    assert states(runtime.engine, "SCJG") == {"delivered": 5}


def _contend(url: str, log_path: str, rounds: int) -> None:
    engine = create_db_engine(url)
    holder = holder_name("proc")
    done = 0
    while done < rounds:
        with lease_for(engine, "GAFJ", seconds=60, holder=holder) as fence:
            if fence is None:
                time.sleep(0.005)  # let the holder work instead of hammering the row
                continue
            # O_APPEND writes land whole and in order: two holders at once would show as enter, enter
            fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
            os.write(fd, f"enter {holder}\n".encode())
            with session_scope(engine) as session:
                fence(session)
            os.write(fd, f"exit {holder}\n".encode())
            os.close(fd)
            done += 1
    engine.dispose()


def test_processes_contending_for_a_lease_never_overlap(engine, tmp_path):
    log = tmp_path / "holders.log"
    log.touch()
    url = engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_contend, args=(url, str(log), 5)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    lines = log.read_text().splitlines()
    assert len(lines) == 30
    for enter, leave in zip(lines[::2], lines[1::2]):
        assert enter.startswith("enter ") and leave == "exit " + enter.removeprefix("enter ")
