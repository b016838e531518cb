"""`hub sync` (sync_agencies) takes the same per-agency lease as the workers."""

from __future__ import annotations

from sqlmodel import Session, select

from hub.leases import acquire, release
from hub.models import Delivery, DeliveryState
from hub.operations import sync_agencies
from tests.sync.support import record


def test_sync_skips_an_agency_a_worker_holds_and_runs_once_it_is_free(sqlite_engine, make_runtime, start_agency, tmp_path):
    agency = start_agency("SCJG")
    runtime = make_runtime(str(sqlite_engine.url), {"SCJG": {"endpoint": agency.endpoint}})
    record(runtime.engine, runtime.registry, [1, 2])
    held = acquire(runtime.engine, "SCJG", "worker-elsewhere", seconds=60)
    lines = list(sync_agencies(runtime, ["SCJG"]))
    assert lines == [("SCJG: skipped — another worker is syncing this agency now", True)]
    assert agency.book.licences() == []
    release(runtime.engine, held)
    lines = list(sync_agencies(runtime, ["SCJG"], pull=False))
    assert lines[0][1] and "pushed 2" in lines[0][0]
    with Session(runtime.engine) as s:
        assert {d.state for d in s.exec(select(Delivery).where(Delivery.agency_code == "SCJG"))} == {DeliveryState.DELIVERED}
