"""Deliveries: backoff with jitter, an agency down for a while, dead letters, a resend after a crash."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from sqlmodel import select

from contracts.records import LicenceGrant
from contracts.registry import load_registry
from hub.clock import utcnow
from hub.db import session_scope
from hub.errors import ConfigurationError
from hub.licences import record_grants
from hub.models import Delivery, DeliveryState, LicenceRevision
from hub.outbox import list_dead, retry_dead, sweep_stale
from adapters import AdapterContext, build_adapter
from hub.push import CLAIM_WINDOW, WINDOW_WAIT, claim_window_for, push_agency
from hub.sync import MAX_BACKOFF_SECONDS, backoff_delay
from sandbox.core import AgencyBook, Fault
from sandbox.filedrop_agencies import DIALECTS, start_filedrop_agency
from tests.helpers import REPO, grant
from tests.sync.support import deliveries, record, states, write_agency_files

T0 = dt.datetime(2026, 6, 1, 8, 0, tzinfo=dt.UTC)


class Clock:
    """A clock the test moves forward (it starts at the real now, when the deliveries were queued)."""

    def __init__(self) -> None:
        self.now = utcnow() + dt.timedelta(seconds=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def to(self, moment: dt.datetime) -> None:
        self.now = moment + dt.timedelta(seconds=1)


@pytest.mark.parametrize(("attempts", "low", "high"), [(1, 15, 30), (2, 30, 60), (3, 60, 120), (6, 480, 960),
                                                      (30, MAX_BACKOFF_SECONDS / 2, MAX_BACKOFF_SECONDS)])  # fmt: skip
def test_backoff_doubles_within_its_jitter_band(attempts, low, high):
    delays = {backoff_delay(attempts, 30.0, rng=random.Random(seed)) for seed in range(50)}
    assert all(low <= d <= high for d in delays)
    assert len(delays) > 40  # jittered: workers that failed together do not retry together


@pytest.mark.parametrize(("retry_after", "expected_at_least"), [(None, 15), (2.0, 15), (500.0, 500), (7200.0, 7200)])
def test_backoff_never_retries_before_retry_after(retry_after, expected_at_least):
    assert backoff_delay(1, 30.0, retry_after=retry_after, rng=random.Random(1)) >= expected_at_least


def test_an_agency_down_for_a_while_gets_everything_when_it_returns(engine, make_runtime, start_agency):
    agency = start_agency("SCJG")
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), {"SCJG": {"endpoint": agency.endpoint}})
    spec, adapter, clock = runtime.agency("SCJG"), runtime.adapter_for("SCJG"), Clock()
    record(runtime.engine, runtime.registry, range(1, 8))
    agency.book.inject(Fault.ERROR_500, times=2)
    agency.book.inject(Fault.RATE_LIMIT)  # then a 429 with Retry-After: 2
    waits = []
    for _ in range(3):
        result = push_agency(runtime.engine, spec, adapter, now=clock)
        assert result.retrying == 7 and result.delivered == 0
        rows = deliveries(runtime.engine, "SCJG")
        assert {d.state for d in rows} == {DeliveryState.WAITING_RETRY}
        due = max(d.next_attempt_at for d in rows)
        waits.append(due - clock.now)
        assert push_agency(runtime.engine, spec, adapter, now=clock).delivered == 0  # not due yet: nothing sent
        clock.to(due)
    assert waits[0] < waits[1] < waits[2]  # backing off
    result = push_agency(runtime.engine, spec, adapter, now=clock)
    adapter.close()
    assert result.delivered == 7
    assert states(runtime.engine, "SCJG") == {"delivered": 7}
    assert {d.attempts for d in deliveries(runtime.engine, "SCJG")} == {4}
    assert len(agency.book.received) == 7


def test_past_the_attempt_limit_deliveries_go_dead_are_listed_and_retry_delivers_them(tmp_path, make_runtime,
                                                                                      start_agency):  # fmt: skip
    agency = start_agency("SCJG")
    db_url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    overrides = {"SCJG": {"endpoint": agency.endpoint, "max_attempts": 3}}
    runtime = make_runtime(db_url, overrides)
    spec, adapter, clock = runtime.agency("SCJG"), runtime.adapter_for("SCJG"), Clock()
    record(runtime.engine, runtime.registry, range(1, 5))
    agency.book.inject(Fault.DROP, times=3)
    for _ in range(3):
        push_agency(runtime.engine, spec, adapter, now=clock)
        clock.to(max(d.next_attempt_at for d in deliveries(runtime.engine, "SCJG")))
    assert states(runtime.engine, "SCJG") == {"dead": 4}
    assert push_agency(runtime.engine, spec, adapter, now=clock).delivered == 0  # dead letters are not retried alone

    env = {"HUB_DATABASE_URL": db_url, "HUB_DATA_DIR": str(tmp_path / "var"),
           "HUB_AGENCIES_DIR": str(write_agency_files(tmp_path / "agencies", overrides))}  # fmt: skip
    listed = hub("dead-letters", "list", "--agency", "scjg", env=env)
    assert listed.exit_code == 0, listed.output
    assert len(listed.output.strip().splitlines()) == 4 and "3 attempts" in listed.output
    with session_scope(runtime.engine) as session:
        dead = list_dead(session, agency="SCJG")
    assert {d.decision_no for d in dead} == {f"津南审批许字〔2026〕T{n:05d}号" for n in range(1, 5)}

    one = hub("dead-letters", "retry", str(dead[0].id), env=env)
    assert one.exit_code == 0, one.output
    assert push_agency(runtime.engine, spec, adapter, now=clock).delivered == 1
    again = hub("dead-letters", "retry", str(dead[0].id), env=env)
    assert again.exit_code == 1 and "no dead delivery" in again.output
    assert hub("dead-letters", "retry", "--agency", "scjg", env=env).exit_code == 0
    assert push_agency(runtime.engine, spec, adapter, now=clock).delivered == 3
    adapter.close()
    assert states(runtime.engine, "SCJG") == {"delivered": 4}
    assert len(agency.book.received) == 4
    with session_scope(runtime.engine) as session:
        assert list_dead(session) == []


def hub(*args: str, env: dict[str, str]):
    """Run the real `hub` command line in this process (typer's runner; quicker than a subprocess)."""
    from typer.testing import CliRunner

    from hub.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def test_a_resend_after_a_crash_is_recognised_by_the_agency(tmp_path, make_runtime, start_agency):
    agency = start_agency("SCJG")
    db_url = f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    overrides = {"SCJG": {"endpoint": agency.endpoint}}
    runtime = make_runtime(db_url, overrides)
    record(runtime.engine, runtime.registry, range(1, 4))
    gate = agency.book.arm("after_receive")  # the agency has recorded the first licence, not yet answered
    env = {**os.environ, "HUB_DATABASE_URL": db_url, "HUB_DATA_DIR": str(tmp_path / "var"),
           "HUB_AGENCIES_DIR": str(write_agency_files(tmp_path / "agencies", overrides))}  # fmt: skip
    sync = subprocess.Popen([sys.executable, "-m", "hub.cli", "sync", "--agency", "SCJG", "--push"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        assert gate.reached.wait(30)
        sync.send_signal(signal.SIGKILL)
    finally:
        sync.wait(10)
        gate.release.set()
    assert states(runtime.engine, "SCJG") == {"sending": 3}  # the crash left them mid-flight
    adapter = runtime.adapter_for("SCJG")
    result = push_agency(runtime.engine, runtime.agency("SCJG"), adapter)
    adapter.close()
    # the killed request had reached the agency, so every message of the resend is a duplicate to it
    assert (result.delivered, result.duplicates) == (3, 3)
    book = agency.book
    assert len(book.received) == 3  # the agency holds each licence once
    assert [r.times_seen for r in book.received.values()] == [2, 2, 2]  # and recognised the resend
    rows = deliveries(runtime.engine, "SCJG")
    assert {d.message_id for d in rows} == set(book.received)
    assert all(d.ack_id == book.received[d.message_id].ack.ack_id for d in rows)


def _five_grants_for_scjg_in_batches_of_two(engine, make_runtime, start_agency):
    agency = start_agency("SCJG")
    runtime = make_runtime(engine.url.render_as_string(hide_password=False),
                           {"SCJG": {"endpoint": agency.endpoint, "batch_size": 2}})  # fmt: skip
    record(runtime.engine, runtime.registry, range(1, 6))
    return agency, runtime


def _settles(engine, expected: dict[str, int], seconds: float = 20.0) -> dict[str, int]:
    """The agency's delivery states once they equal ``expected``, or as they are after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (seen := states(engine, "SCJG")) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen


def test_while_a_batch_is_on_the_wire_the_last_receipts_are_stored_and_the_next_batch_claimed(engine, make_runtime,
                                                                                              start_agency):  # fmt: skip
    """A batch goes out only once its claim is committed, and the hub works while the agency answers."""
    agency, runtime = _five_grants_for_scjg_in_batches_of_two(engine, make_runtime, start_agency)
    gate = agency.book.arm("before_receive", skip=2)  # holds the first licence of the second batch
    adapter = runtime.adapter_for("SCJG")
    done: list = []
    # a window of one batch: each transaction claims a single batch of two
    push = threading.Thread(target=lambda: done.append(push_agency(runtime.engine, runtime.agency("SCJG"), adapter,
                                                                   claim_window=2)))  # fmt: skip
    push.start()
    try:
        assert gate.reached.wait(30)
        second = deliveries(runtime.engine, "SCJG")[2:4]
        # the first batch answered, the third claimed, with the second still held by the agency
        while_held = _settles(runtime.engine, {"delivered": 2, "sending": 3})
    finally:
        gate.release.set()
        push.join(30)
        adapter.close()
    assert [(d.state, d.attempts) for d in second] == [("sending", 1), ("sending", 1)]
    assert while_held == {"delivered": 2, "sending": 3}
    assert done[0].delivered == 5 and states(runtime.engine, "SCJG") == {"delivered": 5}
    assert {d.attempts for d in deliveries(runtime.engine, "SCJG")} == {1}


@pytest.mark.parametrize(("claim_window", "claimed_while_the_first_is_held"), [
    (2, {"sending": 4, "pending": 1}),  # a batch per transaction: the second claimed while the first is out
    (CLAIM_WINDOW, {"sending": 5}),  # the default: all three batches claimed at once, sent one by one
])  # fmt: skip
def test_batches_claimed_behind_a_failed_one_go_back_unsent_and_uncounted(engine, make_runtime, start_agency,
                                                                          claim_window, claimed_while_the_first_is_held):  # fmt: skip
    agency, runtime = _five_grants_for_scjg_in_batches_of_two(engine, make_runtime, start_agency)
    gate = agency.book.arm("before_receive")  # holds the first batch
    adapter = runtime.adapter_for("SCJG")
    done: list = []
    push = threading.Thread(target=lambda: done.append(push_agency(runtime.engine, runtime.agency("SCJG"), adapter,
                                                                   claim_window=claim_window)))  # fmt: skip
    push.start()
    try:
        assert gate.reached.wait(30)
        claimed = _settles(runtime.engine, claimed_while_the_first_is_held)
        agency.book.inject(Fault.ERROR_500)  # the agency's answer to the second batch
    finally:
        gate.release.set()
        push.join(30)
        adapter.close()
    assert claimed == claimed_while_the_first_is_held
    assert (done[0].delivered, done[0].retrying) == (2, 2)
    rows = deliveries(runtime.engine, "SCJG")
    assert [(d.state, d.attempts) for d in rows] == [("delivered", 1), ("delivered", 1), ("waiting_retry", 1),
                                                     ("waiting_retry", 1), ("pending", 0)]  # fmt: skip
    assert rows[4].sending_since is None and len(agency.book.received) == 2
    # the third batch was never sent: the next push sends it without waiting for the second's backoff
    again = runtime.adapter_for("SCJG")
    try:
        assert push_agency(runtime.engine, runtime.agency("SCJG"), again).delivered == 1
    finally:
        again.close()
    assert [(d.state, d.attempts) for d in deliveries(runtime.engine, "SCJG")][4] == ("delivered", 1)


def test_batches_left_in_sending_by_a_crash_and_not_resent_go_back_as_the_sweeper_would_return_them(engine, make_runtime,
                                                                                                    start_agency):  # fmt: skip
    agency, runtime = _five_grants_for_scjg_in_batches_of_two(engine, make_runtime, start_agency)
    crashed = [d.id for d in deliveries(runtime.engine, "SCJG")[2:4]]
    with session_scope(runtime.engine) as session:  # a holder claimed the second batch, then died
        for delivery in session.exec(select(Delivery).where(Delivery.id.in_(crashed))).all():
            delivery.state, delivery.attempts, delivery.sending_since = DeliveryState.SENDING, 1, utcnow()
    agency.book.inject(Fault.ERROR_500)  # the agency refuses the first batch of the next push
    adapter = runtime.adapter_for("SCJG")
    try:
        result = push_agency(runtime.engine, runtime.agency("SCJG"), adapter)  # one window: all five claimed
    finally:
        adapter.close()
    assert (result.delivered, result.retrying) == (0, 2)
    rows = deliveries(runtime.engine, "SCJG")
    assert [(d.state, d.attempts) for d in rows] == [("waiting_retry", 1), ("waiting_retry", 1), ("waiting_retry", 1),
                                                     ("waiting_retry", 1), ("pending", 0)]  # fmt: skip
    assert all(d.sending_since is None for d in rows) and agency.book.received == {}


def test_each_delivery_keeps_the_receipt_the_agency_gave_for_it(engine, make_runtime, start_agency):
    agency, runtime = _five_grants_for_scjg_in_batches_of_two(engine, make_runtime, start_agency)
    adapter = runtime.adapter_for("SCJG")
    try:
        assert push_agency(runtime.engine, runtime.agency("SCJG"), adapter).delivered == 5
    finally:
        adapter.close()
    for delivery in deliveries(runtime.engine, "SCJG"):
        ack = agency.book.received[delivery.message_id].ack
        acked_at = delivery.acked_at if delivery.acked_at.tzinfo else delivery.acked_at.replace(tzinfo=dt.UTC)
        assert (delivery.ack_id, acked_at, delivery.receipt_digest) == (ack.ack_id, ack.received_at, ack.digest)
        assert delivery.sent_digest == ack.digest and delivery.state == DeliveryState.DELIVERED


@pytest.mark.parametrize(("field", "stored"), [("XK_JDRQ", "not a date"), ("XK_JDRQ", "2026-02-30"), ("XK_WSH", None)])
def test_a_stored_grant_that_no_longer_maps_is_a_dead_letter_and_the_rest_are_delivered(engine, make_runtime,
                                                                                       start_agency, field,
                                                                                       stored):  # fmt: skip
    agency, runtime = _five_grants_for_scjg_in_batches_of_two(engine, make_runtime, start_agency)
    third = deliveries(runtime.engine, "SCJG")[2]
    with session_scope(runtime.engine) as session:  # as if the contract had changed since it was recorded
        revision = session.get(LicenceRevision, third.revision_id)
        changed = {**revision.payload, field: stored}
        revision.payload = {key: value for key, value in changed.items() if value is not None}  # None: left out
        session.add(revision)
    adapter = runtime.adapter_for("SCJG")
    try:
        result = push_agency(runtime.engine, runtime.agency("SCJG"), adapter)
        assert push_agency(runtime.engine, runtime.agency("SCJG"), adapter).delivered == 0  # nothing left behind
    finally:
        adapter.close()
    assert (result.delivered, result.dead) == (4, 1) and field in result.error
    assert [d.state for d in deliveries(runtime.engine, "SCJG")] == ["delivered", "delivered", "dead", "delivered",
                                                                     "delivered"]  # fmt: skip
    assert third.message_id not in agency.book.received and len(agency.book.received) == 4
    with session_scope(runtime.engine) as session:
        (dead,) = list_dead(session, agency="SCJG")
    assert dead.id == third.id and "no longer maps to SCJG's contract" in dead.last_error and field in dead.last_error


def test_a_licence_changed_while_its_old_state_is_on_the_wire_never_reaches_the_agency_after_the_new_one(
        engine, make_runtime, start_agency):  # fmt: skip
    agency = start_agency("SCJG")
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), {"SCJG": {"endpoint": agency.endpoint}})
    record(runtime.engine, runtime.registry, [1])
    gate = agency.book.arm("before_fault")
    adapter = runtime.adapter_for("SCJG")
    done: list = []
    push = threading.Thread(target=lambda: done.append(push_agency(runtime.engine, runtime.agency("SCJG"), adapter)))
    push.start()
    try:
        assert gate.reached.wait(30)  # the first state is claimed and on the wire
        with session_scope(runtime.engine) as session:  # meanwhile the licence changes
            record_grants(session, [LicenceGrant.model_validate(grant(1, XK_NR="热食类食品制售、冷食类食品制售"))],
                          runtime.registry, actor="test")  # fmt: skip
        agency.book.inject(Fault.ERROR_500)  # and the agency fails the first state's request
    finally:
        gate.release.set()
        push.join(30)
    try:
        first, second = deliveries(runtime.engine, "SCJG")
        assert (first.state, first.superseded_by) == ("superseded", second.id)  # not retried behind the new state
        later = utcnow() + dt.timedelta(days=1)  # past any backoff the first state could have had
        assert push_agency(runtime.engine, runtime.agency("SCJG"), adapter, now=lambda: later).delivered == 1
    finally:
        adapter.close()
    assert list(agency.book.received) == [second.message_id]
    assert [d.state for d in deliveries(runtime.engine, "SCJG")] == ["superseded", "delivered"]


def test_a_push_gives_its_connection_back_committing_durably_whether_it_ends_well_or_not(pg_url, make_runtime,
                                                                                       start_agency):  # fmt: skip
    """The push commits without waiting for the disk (see hub.push); nothing else on its connection may."""
    agency = start_agency("SCJG")
    runtime = make_runtime(pg_url, {"SCJG": {"endpoint": agency.endpoint, "batch_size": 2}})
    record(runtime.engine, runtime.registry, range(1, 6))
    adapter = runtime.adapter_for("SCJG")

    def commits_of_the_pooled_connection() -> str:
        assert runtime.engine.pool.checkedin() == 1  # the push's own: the next checkout gets it
        with runtime.engine.connect() as conn:
            return conn.exec_driver_sql("SHOW synchronous_commit").scalar()

    try:
        assert push_agency(runtime.engine, runtime.agency("SCJG"), adapter, max_batches=1).delivered == 2
        assert commits_of_the_pooled_connection() == "on"
        agency.queue_response(401, {"error": "unauthorized"})  # the next push raises: fix the configuration
        with pytest.raises(ConfigurationError):
            push_agency(runtime.engine, runtime.agency("SCJG"), adapter)
        assert commits_of_the_pooled_connection() == "on"
    finally:
        adapter.close()


def test_the_sweeper_requeues_deliveries_a_dead_worker_left_in_sending(sqlite_engine, make_runtime):
    runtime = make_runtime(str(sqlite_engine.url), {})
    record(runtime.engine, runtime.registry, range(1, 3))
    with session_scope(runtime.engine) as session:
        for d in session.exec(select(Delivery)).all():
            d.state, d.sending_since = DeliveryState.SENDING, T0
    from hub.leases import acquire

    assert acquire(runtime.engine, "SCJG", "live-worker", seconds=600, now=lambda: T0) is not None
    later = T0 + dt.timedelta(seconds=300)
    with session_scope(runtime.engine) as session:
        moved = sweep_stale(session, older_than=dt.timedelta(seconds=120), now=later)
    # SCJG's holder is alive and will store its receipts; every other agency's rows go back
    assert states(runtime.engine, "SCJG") == {"sending": 2}
    others = [d for d in deliveries(runtime.engine) if d.agency_code != "SCJG"]
    assert moved == len(others) > 0
    assert {d.state for d in others} == {DeliveryState.WAITING_RETRY}
    with session_scope(runtime.engine) as session:
        assert sweep_stale(session, older_than=dt.timedelta(seconds=120), now=later + dt.timedelta(seconds=601)) == 2


def test_retry_needs_exactly_one_target(sqlite_engine):
    with session_scope(sqlite_engine) as session, pytest.raises(ValueError):
        retry_dead(session)


def test_a_licence_the_agency_encoding_cannot_hold_fails_alone_and_its_batch_goes_on(tmp_path, monkeypatch,
                                                                                      make_runtime):  # fmt: skip
    """消防支队 takes GBK files: 𠮷 (U+20BB7) is not in GBK. It used to fail its whole batch of 200,
    attempt after attempt, until all of them were dead letters."""
    d = DIALECTS["XFZD"]
    running = start_filedrop_agency("XFZD", root=tmp_path / "share", key_dir=tmp_path / "keys",
                                    book=AgencyBook(code="XFZD", name=d.name, uscc=d.uscc,
                                                    subject_fields=d.subject_fields, malformed_every=0))  # fmt: skip
    monkeypatch.setenv("HUB_XFZD_SFTP_KEY", str(running.client_key_file))
    transport = {**load_registry()["XFZD"].transport, "receipt_timeout": 10, "poll_interval": 0.02}
    overrides = running.transport_overrides(transport)
    overrides["transport"].pop("key_file")  # xfzd.toml's credentials reference names the key: the variable above
    runtime = make_runtime(f"sqlite:///{tmp_path / 'hub.db'}", {"XFZD": overrides})
    grants = [grant(n) for n in (1, 2, 3)]
    grants[1]["XK_XDR_MC"] = "天津𠮷祥餐饮有限公司"
    with session_scope(runtime.engine) as session:
        record_grants(session, [LicenceGrant.model_validate(g) for g in grants], runtime.registry, actor="test")
    spec, adapter, clock = runtime.agency("XFZD"), runtime.adapter_for("XFZD"), Clock()
    try:
        first = push_agency(runtime.engine, spec, adapter, now=clock)
        second = push_agency(runtime.engine, spec, adapter, now=clock)
    finally:
        adapter.close()
        running.stop()

    assert (first.delivered, first.retrying, second.delivered) == (0, 1, 2)
    rows = {d.message_id: d for d in deliveries(runtime.engine, "XFZD")}
    refused = [d for d in rows.values() if d.state == DeliveryState.WAITING_RETRY]
    assert len(refused) == 1 and "行政相对人名称 '𠮷' cannot be written in gbk" in refused[0].last_error
    assert sorted(r.payload["行政相对人名称"] for r in running.book.received.values()) == sorted(
        g["XK_XDR_MC"] for g in grants if "𠮷" not in g["XK_XDR_MC"])  # fmt: skip
    assert {d.attempts for d in rows.values() if d.state == DeliveryState.DELIVERED} == {1}  # the first try not counted


@pytest.mark.parametrize(("code", "windows_of"), [("SCJG", 4), ("GAFJ", 10), ("GSJ", 10), ("GHFJ", 1), ("XFZD", 1)])
def test_a_window_never_waits_on_receipts_longer_than_a_task_may_run(tmp_path, code, windows_of):
    """GHFJ answers a batch when it has loaded it (300 s at most): two batches in a window could outlast the
    task's soft time limit, and their receipts would be lost every run; the others answer in the response."""
    (tmp_path / "drop").mkdir()
    spec = load_registry(overrides={code: {"endpoint": (tmp_path / "drop").as_uri()}}
                         if code in ("GHFJ", "XFZD") else None)[code]  # fmt: skip
    adapter = build_adapter(spec, AdapterContext(work_dir=tmp_path / "work", secret="token"))
    try:
        window = claim_window_for(spec, adapter)
        assert window == windows_of * spec.batch_size
        assert (window // spec.batch_size) * adapter.receipt_wait <= WINDOW_WAIT or window == spec.batch_size
    finally:
        adapter.close()


def test_a_dead_letter_whose_licence_changed_since_is_superseded_not_sent_again(sqlite_engine, make_runtime):
    runtime = make_runtime(str(sqlite_engine.url), {})
    record(runtime.engine, runtime.registry, [1])
    with session_scope(runtime.engine) as session:  # the later state, recorded while the first was on the wire
        record_grants(session, [LicenceGrant.model_validate(grant(1, XK_NR="热食类食品制售、冷食类食品制售"))],
                      runtime.registry, actor="test")  # fmt: skip
    first, second = deliveries(runtime.engine, "SCJG")
    with session_scope(runtime.engine) as session:  # and the first then went dead (its grant no longer mapped)
        dead = session.get(Delivery, first.id)
        dead.state, dead.superseded_by = DeliveryState.DEAD, None
    with session_scope(runtime.engine) as session:
        assert retry_dead(session, agency="SCJG", actor="op") == []
    first, second = deliveries(runtime.engine, "SCJG")
    assert (first.state, first.superseded_by, second.state) == ("superseded", second.id, "pending")

