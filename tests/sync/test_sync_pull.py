"""Pulls: a repeated page changes nothing, memory stays flat however many pages, status tells the story."""

from __future__ import annotations

import gc
import json
import sqlite3
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from sqlmodel import select

from adapters.base import Cursor
from certs.pki import init_pki, issue_leaf, load_certificate, load_private_key, write_certificate
from contracts.registry import load_registry
from hub.db import session_scope
from hub.errors import FatalError, TransientError
from hub.models import QuarantinedRecord
from hub.jobs import pull_job, sync_job
from hub.status import collect_status, render_text
from hub.sync import pull_agency
from sandbox.core import Fault
from tests.helpers import make_uscc
from tests.sync.support import agency_table, pulled, record


def scripted_penalties(book, count: int) -> None:
    for n in range(count):
        book.add_penalty(subject_name=f"天津测试{n}号有限公司", uscc=make_uscc(10_000 + n))


def test_a_repeated_page_duplicates_nothing(engine, make_runtime, start_agency):
    agency = start_agency("SCJG")
    transport = {**agency_table("SCJG")["rest"], "page_size": 5}
    runtime = make_runtime(engine.url.render_as_string(hide_password=False),
                           {"SCJG": {"endpoint": agency.endpoint, "transport": transport}})  # fmt: skip
    scripted_penalties(agency.book, 12)
    agency.book.inject(Fault.REPEAT, times=1)  # the agency serves page 1 twice in a row
    first = pull_job(runtime, "SCJG")
    agency.book.inject(Fault.REPEAT, times=2)  # and later serves its last pages again
    second = pull_job(runtime, "SCJG")
    ids, refs, cursor = pulled(runtime.engine, "SCJG")
    assert sorted(ids) == sorted(p.record_id for p in agency.book.penalties)
    assert len(ids) == len(set(ids)) == 12 and refs == []
    assert cursor == 12
    assert first["pull"]["created"] == 12 and second["pull"]["created"] == 0


def _in_database_file(engine) -> int:
    """Violations that have reached the SQLite database file itself (immutable: the log is not read)."""
    with closing(sqlite3.connect(f"file:{engine.url.database}?immutable=1", uri=True)) as db:
        if not db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'violations'").fetchone()[0]:
            return 0
        return db.execute("SELECT count(*) FROM violations").fetchone()[0]


def test_a_pull_into_sqlite_copies_its_log_back_while_it_runs(sqlite_engine, make_runtime, start_agency):
    """Not inside the pull's own commits: a thread checkpoints while the pull goes on, so the first
    page's records reach the database file while the agency still holds the second page."""
    agency = start_agency("SCJG", malformed_every=0)
    transport = {**agency_table("SCJG")["rest"], "page_size": 5}
    runtime = make_runtime(str(sqlite_engine.url), {"SCJG": {"endpoint": agency.endpoint, "transport": transport}})
    scripted_penalties(agency.book, 10)
    held = agency.book.arm("fetch", skip=1)  # the second page waits until released
    with ThreadPoolExecutor(1) as pool:
        pulling = pool.submit(pull_agency, runtime.engine, runtime.agency("SCJG"), runtime.adapter_for("SCJG"))
        assert held.reached.wait(10)
        deadline = time.monotonic() + 10
        while _in_database_file(runtime.engine) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        in_file = _in_database_file(runtime.engine)
        held.release.set()
        result = pulling.result(timeout=30)
    assert in_file == 5  # the first page, copied back while the second was still at the agency
    assert result.created == 10 and result.pages == 2


@pytest.mark.slow
def test_memory_stays_flat_however_many_pages(sqlite_engine, make_runtime, start_agency):
    """A pull holds one page at a time: its working set is the same for 10 pages or 50.

    What a pull leaves behind is measured apart: bounded caches of the libraries (pydantic's
    string cache, SQLAlchemy's statement caches) keep a few small strings per new record until
    they are full, far less than a record — a pull that kept its records would show here.
    """
    agency = start_agency("SCJG", malformed_every=0)
    transport = {**agency_table("SCJG")["rest"], "page_size": 10}
    runtime = make_runtime(str(sqlite_engine.url), {"SCJG": {"endpoint": agency.endpoint, "transport": transport}})
    spec = runtime.agency("SCJG")
    scripted_penalties(agency.book, 10 * 62)
    working, kept = [], []
    adapter = runtime.adapter_for("SCJG")
    try:
        pull_agency(runtime.engine, spec, adapter, max_pages=2)  # warm up (SQL compilation, imports)
        for pages in (10, 50):
            gc.collect()
            tracemalloc.start()
            result = pull_agency(runtime.engine, spec, adapter, max_pages=pages)
            gc.collect()
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert result.pages == pages
            working.append(peak - current)
            kept.append(current / (pages * 10))
        tracemalloc.start()
        held = adapter.fetch(Cursor())  # what one page of records weighs while it is held
        record_size = tracemalloc.get_traced_memory()[0] / len(held.records)
        tracemalloc.stop()
    finally:
        adapter.close()
    # five times the pages: a pull that accumulated pages would need about five times the memory
    assert working[1] < working[0] * 2, f"working set for 50 pages {working[1]} vs 10 pages {working[0]}"
    assert max(kept) < record_size / 3, f"{max(kept):.0f} bytes kept per record; a record weighs {record_size:.0f}"


def test_status_shows_deliveries_pulls_and_quarantine(engine, make_runtime, start_agency):
    agency = start_agency("SCJG", malformed_every=3)
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), {"SCJG": {"endpoint": agency.endpoint}})
    record(runtime.engine, runtime.registry, range(1, 5))
    assert sync_job(runtime, "SCJG")["push"]["delivered"] == 4
    with session_scope(runtime.engine) as session:
        status = collect_status(session, runtime.registry.values())
    by_code = {a.code: a for a in status.agencies}
    scjg, gsj = by_code["SCJG"], by_code["GSJ"]
    malformed = sum(1 for p in agency.book.penalties if p.malformation)
    assert (scjg.delivered, scjg.pending, scjg.dead, scjg.quarantined) == (4, 0, 0, malformed)
    assert scjg.last_push_at and scjg.last_pull_at and scjg.fresh and scjg.lease_holder is None
    assert gsj.pending == 4 and gsj.last_pull_at is None and not gsj.fresh  # never reached
    text = render_text(status)
    assert "4 delivered" in text and f"{malformed} quarantined" in text and "pull never" in text
    assert json.loads(status.model_dump_json())["agencies"][0]["code"] == "DSJ"


def test_the_next_page_is_requested_while_this_one_is_stored(engine, make_runtime, start_agency):
    """Pulling a slow agency costs its time plus ours only once: the request for page 2 reaches the
    agency before page 1 is committed; what is stored and where the cursor stands do not change."""
    agency = start_agency("SCJG", malformed_every=0)
    transport = {**agency_table("SCJG")["rest"], "page_size": 5}
    runtime = make_runtime(engine.url.render_as_string(hide_password=False),
                           {"SCJG": {"endpoint": agency.endpoint, "transport": transport}})  # fmt: skip
    scripted_penalties(agency.book, 12)
    second_request = agency.book.arm("fetch", skip=1)
    seen_while_storing_page_1 = []

    def fence(_session) -> None:
        if not seen_while_storing_page_1:
            seen_while_storing_page_1.append(second_request.reached.wait(10))
            second_request.release.set()

    adapter = runtime.adapter_for("SCJG")
    try:
        first = pull_agency(runtime.engine, runtime.agency("SCJG"), adapter, fence=fence, max_pages=2)
        assert seen_while_storing_page_1 == [True]
        assert first.created == 10 and first.cursor == 10
        rest = pull_agency(runtime.engine, runtime.agency("SCJG"), adapter)
    finally:
        adapter.close()
    ids, _refs, cursor = pulled(runtime.engine, "SCJG")
    assert rest.created == 2 and cursor == 12 and len(ids) == len(set(ids)) == 12


@pytest.mark.parametrize("collector_on", [True, False])
def test_a_pull_leaves_the_garbage_collector_as_it_found_it(sqlite_engine, make_runtime, start_agency, collector_on):
    """Pages are stored with the cyclic collector paused (hub.gcpause); a worker finds it on again
    after the pull, or still off if the process had turned it off itself."""
    agency = start_agency("SCJG", malformed_every=0)
    transport = {**agency_table("SCJG")["rest"], "page_size": 5}
    runtime = make_runtime(str(sqlite_engine.url), {"SCJG": {"endpoint": agency.endpoint, "transport": transport}})
    scripted_penalties(agency.book, 12)
    was_enabled = gc.isenabled()
    (gc.enable if collector_on else gc.disable)()
    try:
        result = pull_job(runtime, "SCJG")
        assert gc.isenabled() is collector_on
    finally:
        (gc.enable if was_enabled else gc.disable)()
    assert result["pull"]["created"] == 12


def test_an_agency_that_says_more_but_moves_the_cursor_nowhere_stops_the_pull(engine, make_runtime, start_agency):
    agency = start_agency("SCJG", malformed_every=0)
    transport = {**agency_table("SCJG")["rest"], "page_size": 5}
    runtime = make_runtime(engine.url.render_as_string(hide_password=False),
                           {"SCJG": {"endpoint": agency.endpoint, "transport": transport}})  # fmt: skip
    scripted_penalties(agency.book, 5)
    pull_job(runtime, "SCJG")
    for _ in range(6):  # a cursor API answering "more" without a next cursor, again and again
        agency.queue_response(200, {"data": [], "hasMore": True})

    with pytest.raises(FatalError, match="does not move the cursor: stopping rather than asking again forever"):
        pull_agency(runtime.engine, runtime.agency("SCJG"), runtime.adapter_for("SCJG"))

    assert len(agency.server.state.scripted) >= 4  # the page and its read-ahead, not until the answers ran out
    assert pulled(runtime.engine, "SCJG")[2] == 5  # the cursor stays where the last real page left it


def test_a_record_id_longer_than_the_hub_stores_is_quarantined_and_the_page_goes_on(engine, make_runtime, start_agency):
    """The contract's bound is the column's: on PostgreSQL a longer id failed the page's COPY, every retry."""
    agency = start_agency("SCJG", malformed_every=0)
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), {"SCJG": {"endpoint": agency.endpoint}})
    scripted_penalties(agency.book, 3)
    agency.book.penalties[1].record_id = "SCJG-" + "长" * 250

    result = pull_agency(runtime.engine, runtime.agency("SCJG"), runtime.adapter_for("SCJG"))

    ids, refs, cursor = pulled(runtime.engine, "SCJG")
    assert (result.created, result.quarantined, cursor) == (2, 1, 3)
    assert sorted(ids) == sorted(p.record_id for p in agency.book.penalties if len(p.record_id) < 200)
    with session_scope(runtime.engine) as session:
        (reasons,) = session.exec(select(QuarantinedRecord.reasons)).all()
    assert any(r["field"] == "agency_record_id" and "at most 200 characters" in r["reason"] for r in reasons), reasons


def test_a_push_the_agency_fails_does_not_hold_back_the_pull_of_the_same_sync(engine, make_runtime, start_agency):
    agency = start_agency("SCJG", malformed_every=0)
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), {"SCJG": {"endpoint": agency.endpoint}})
    record(runtime.engine, runtime.registry, range(1, 4))
    scripted_penalties(agency.book, 4)
    agency.book.inject(Fault.ERROR_500)  # the push's request: the pull's are answered

    with pytest.raises(TransientError, match="push SCJG") as failed:  # the beat's task retries it later
        sync_job(runtime, "SCJG")

    ids, _, cursor = pulled(runtime.engine, "SCJG")
    assert (len(ids), cursor) == (4, 4)  # the pull ran after the failed push, under the same lease
    assert failed.value.report["retrying"] == 3 and agency.book.received == {}


def test_a_push_the_agency_refuses_for_good_does_not_hold_back_the_pull_either(engine, make_runtime, start_agency):
    agency = start_agency("SCJG", malformed_every=0)
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), {"SCJG": {"endpoint": agency.endpoint}})
    record(runtime.engine, runtime.registry, range(1, 4))
    scripted_penalties(agency.book, 4)
    agency.queue_response(400, {"error": "bad_request", "message": "字段格式错误"})  # the push's request

    with pytest.raises(FatalError, match="SCJG"):  # raised once the pull is done
        sync_job(runtime, "SCJG")

    ids, _, cursor = pulled(runtime.engine, "SCJG")
    assert (len(ids), cursor) == (4, 4)


def test_a_pull_refused_for_good_is_not_hidden_behind_a_push_that_failed_for_now(engine, make_runtime, start_agency):
    """The task retries a TransientError on its own: raised instead, the pull's failure would never reach anyone."""
    agency = start_agency("SCJG", malformed_every=0)
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), {"SCJG": {"endpoint": agency.endpoint}})
    record(runtime.engine, runtime.registry, range(1, 3))
    agency.queue_response(503, {"error": "busy"}, {"Retry-After": "1"})  # the push's request
    agency.queue_response(400, {"error": "bad_request", "message": "参数错误"})  # the pull's

    with pytest.raises(FatalError, match="SCJG"):
        sync_job(runtime, "SCJG")


def test_status_names_the_certificate_used_with_an_agency_that_expires_first(sqlite_engine, tmp_path):
    """SCJG's client certificate, reissued to last 5 days, comes before the hub's own (a year and more)."""
    pki = init_pki(tmp_path / "pki", parties=[("SCJG", "市场监管局"), ("GSJ", "国税局")])
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SCJG")])
    cert, _ = issue_leaf("client", subject, ca_cert=load_certificate(pki.ca_cert), ca_key=load_private_key(pki.ca_key),
                         validity_days=5)  # fmt: skip
    write_certificate(pki.party("SCJG").client_cert, cert)  # status reads certificates only
    with session_scope(sqlite_engine) as session:
        status = collect_status(session, load_registry().values(), pki_dir=pki.root)
    by_code = {a.code: a for a in status.agencies}
    assert by_code["SCJG"].certificate.name == "SCJG/client" and by_code["SCJG"].certificate.days_left <= 5
    assert by_code["GSJ"].certificate.days_left > 300  # its own and the hub's: all issued for a year and more
