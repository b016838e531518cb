"""Scenario 1 (REST pull) and the pieces scenario 5 (memory) reuses.

The hub pulls a synthetic SCJG (cursor pages of 1,000) through the real REST adapter and
hub.sync.pull_agency: mapping, validation, dedupe, quarantine, audit, cursor committed per
page. Baselines read the very same endpoint: dlt's rest_api source into the same database
server, and a bare requests loop with executemany of the raw fields.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from bench.measure import Measurement, peak_rss_mb, timed
from bench.served import served
from bench.synthetic import synthetic_book
from contracts.registry import AGENCIES_DIR, load_registry
from sandbox.rest_agencies import RunningAgency, start_rest_agency
from sandbox.rest_dialects import REST_DIALECTS

__all__ = ["bare_pull", "checked_read", "dlt_pull", "hub_checked_pull", "hub_pull", "hub_stored_pull", "pull_spec",
           "served_pull_agency", "start_pull_agency", "stored_only"]

PAGE = 1000


def start_pull_agency(count: int) -> RunningAgency:
    """SCJG on loopback serving ``count`` lazily rendered penalties."""
    d = REST_DIALECTS["SCJG"]
    return start_rest_agency("SCJG", book=synthetic_book("SCJG", d.name, d.uscc, count, subject_fields=d.licence_subject))


def _pull_agency(count: int) -> tuple[RunningAgency, SimpleNamespace]:
    agency = start_pull_agency(count)
    return agency, SimpleNamespace(endpoint=agency.endpoint, token=agency.token)  # what the pulls read of it


def served_pull_agency(count: int) -> contextlib.AbstractContextManager[SimpleNamespace]:
    """The SCJG agency of ``count`` records, served by a process of its own (bench.served)."""
    return served(_pull_agency, count)


def pull_spec(agency: RunningAgency):
    table = tomllib.loads((AGENCIES_DIR / "scjg.toml").read_text(encoding="utf-8"))["rest"]
    table["page_size"] = PAGE
    return load_registry(overrides={"SCJG": {"endpoint": agency.endpoint, "transport": table}})["SCJG"]


def hub_pull(url: str, agency: RunningAgency, work: Path, *, label: str = "hub") -> Measurement:
    """hub.sync.pull_agency from an empty, migrated database until the agency has no more."""
    from adapters import AdapterContext, build_adapter
    from hub.db import create_db_engine, migrate, session_scope
    from hub.licences import ensure_agencies
    from hub.sync import pull_agency

    engine = create_db_engine(url)
    migrate(engine)
    spec = pull_spec(agency)
    with session_scope(engine) as session:
        ensure_agencies(session, [spec])
    (work / "scjg").mkdir(exist_ok=True)
    adapter = build_adapter(spec, AdapterContext(work_dir=work / "scjg", secret=agency.token))
    with timed() as t:
        result = pull_agency(engine, spec, adapter)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM violations")).scalar_one()
    engine.dispose()
    adapter.close()
    return Measurement(label, records=stored, seconds=t.seconds, peak_mb=peak_rss_mb(),
                       extra={"pages": result.pages, "created": result.created, "quarantined": result.quarantined})  # fmt: skip


def checked_read(spec, adapter, label: str) -> Measurement:
    """The hub's inbound work short of the database: every page read as a pull reads it (the next
    one requested while this one is worked on), every record mapped and validated; nothing stored.

    A reference, not a target: a pull that also dedupes, stores, audits and commits can be no
    faster than this, so this row's ratio to a baseline bounds what the whole path could reach.
    """
    from adapters.base import Cursor
    from contracts.mapping import native_to_violation
    from hub.errors import ContractViolation
    from hub.gcpause import cyclic_gc_paused
    from hub.sync import PageReader

    checked = refused = pages = 0
    cursor = Cursor()
    reader = PageReader(adapter)
    try:
        with timed() as t:
            while True:
                with cyclic_gc_paused():  # as pull_agency does per page
                    page = reader.fetch(cursor)
                    refused += len(page.rejected)
                    for index, inbound in enumerate(page.records, start=1):
                        try:
                            native_to_violation(inbound.native, spec.violation_mapping, agency_code=spec.code,
                                                record=inbound.ref or f"item {index}")  # fmt: skip
                            checked += 1
                        except ContractViolation:
                            refused += 1
                adapter.acknowledge(page)
                pages += 1
                cursor = page.next_cursor
                if not page.more:
                    break
    finally:
        reader.close()
    # no peak memory: the process's peak so far would be whatever ran before (a raw load's tuples)
    return Measurement(label, records=checked, seconds=t.seconds, extra={"pages": pages, "refused": refused})


def stored_only(url: str, spec, adapter, label: str) -> Measurement:
    """The other half of the hub's inbound work: every page committed as pull_agency commits it
    (dedupe, company links, violations with their first revisions, quarantine, audit entry, cursor),
    its records fetched, mapped and validated beforehand, outside the timing.

    A reference, not a target, like checked_read: the whole path does this and the checks too, so
    it can be no faster than this either. Pages are read one after another, with no page read
    ahead, so no fetch runs inside the timed commits.
    """
    from adapters.base import Cursor
    from hub.db import WalCheckpointer, create_db_engine, migrate, session_scope
    from hub.gcpause import cyclic_gc_paused
    from hub.licences import ensure_agencies
    from hub.sync import PullResult, check_page, commit_page

    engine = create_db_engine(url)
    migrate(engine)
    with session_scope(engine) as session:
        ensure_agencies(session, [spec])
    result, cursor, seconds = PullResult(spec.code), Cursor(), 0.0
    checkpointer = WalCheckpointer(engine).start()  # as pull_agency runs it
    try:
        while True:
            with cyclic_gc_paused():
                page = adapter.fetch(cursor)
                checked = check_page(spec, page)
                with timed() as t:
                    commit_page(engine, spec, cursor, checked, result)
            seconds += t.seconds
            adapter.acknowledge(page)
            result.pages += 1
            cursor = page.next_cursor
            if not page.more:
                break
    finally:
        checkpointer.stop()
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT count(*) FROM violations")).scalar_one()
    engine.dispose()
    return Measurement(label, records=stored, seconds=seconds,
                       extra={"pages": result.pages, "created": result.created, "quarantined": result.quarantined})  # fmt: skip


def hub_stored_pull(url: str, agency: RunningAgency, work: Path) -> Measurement:
    """stored_only over the REST agency: the pull's commits alone, into the database at ``url``."""
    from adapters import AdapterContext, build_adapter

    spec = pull_spec(agency)
    (work / "scjg-store").mkdir(exist_ok=True)
    adapter = build_adapter(spec, AdapterContext(work_dir=work / "scjg-store", secret=agency.token))
    try:
        return stored_only(url, spec, adapter, "hub store of checked records, fetch and checks untimed")
    finally:
        adapter.close()


def hub_checked_pull(agency: RunningAgency, work: Path) -> Measurement:
    """checked_read over the REST agency: fetch, JSON, mapping and validation of every record, no database."""
    from adapters import AdapterContext, build_adapter

    spec = pull_spec(agency)
    (work / "scjg-read").mkdir(exist_ok=True)
    adapter = build_adapter(spec, AdapterContext(work_dir=work / "scjg-read", secret=agency.token))
    try:
        return checked_read(spec, adapter, "hub fetch + map + validate, no database")
    finally:
        adapter.close()


def dlt_pull(url: str, agency: RunningAgency, work: Path) -> Measurement:
    """dlt's rest_api source, cursor paginator, into the same kind of database (dlt's sqlalchemy destination)."""
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    os.environ["DLT_DATA_DIR"] = str(work / "dlt-data")
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source({
        "client": {"base_url": agency.endpoint, "auth": {"type": "bearer", "token": agency.token},
                   "paginator": {"type": "cursor", "cursor_path": "nextCursor", "cursor_param": "cursor",
                                 "has_more_path": "hasMore"}},
        "resources": [{"name": "penalties", "endpoint": {"path": "/api/v2/penalties", "data_selector": "data",
                                                           "params": {"limit": PAGE}},
                       "primary_key": "penaltyId", "write_disposition": "merge"}],
    })  # fmt: skip
    pipeline = dlt.pipeline(pipeline_name=f"bench_{os.getpid()}", destination=dlt.destinations.sqlalchemy(url),
                            dataset_name="dlt_bench", pipelines_dir=str(work / "dlt-pipelines"))  # fmt: skip
    with timed() as t:
        pipeline.run(source)
    with pipeline.sql_client() as client:
        rows = client.execute_sql(f"SELECT count(*) FROM {client.make_qualified_table_name('penalties')}")[0][0]
    return Measurement("dlt rest_api", records=rows, seconds=t.seconds, peak_mb=peak_rss_mb(),
                       note="dlt rest_api source, cursor paginator, merge on penaltyId, sqlalchemy destination")  # fmt: skip


_BARE_COLUMNS = ("penaltyId", "entName", "uniscid", "penDecNo", "penType", "penAm", "penDecIssDate", "penValidTo")


def bare_pull(url: str, agency: RunningAgency) -> Measurement:
    """A bare requests loop over the cursor pages and executemany of the raw fields (no mapping or checks)."""
    import requests

    engine = sa.create_engine(url)
    cols = ", ".join(f'"{c}" TEXT' for c in _BARE_COLUMNS)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE bare_penalties ({cols}, PRIMARY KEY (\"penaltyId\"))"))
    insert = sa.text(f"INSERT INTO bare_penalties VALUES ({', '.join(':c%d' % i for i in range(len(_BARE_COLUMNS)))})")
    http = requests.Session()
    http.headers["Authorization"] = f"Bearer {agency.token}"
    cursor: str | None = None
    total = 0
    with timed() as t:
        while True:
            params: dict[str, Any] = {"limit": PAGE, **({"cursor": cursor} if cursor else {})}
            answer = http.get(f"{agency.endpoint}/api/v2/penalties", params=params, timeout=(5, 60)).json()
            rows = [{f"c{i}": None if r.get(c) is None else str(r.get(c)) for i, c in enumerate(_BARE_COLUMNS)}
                    for r in answer["data"]]  # fmt: skip
            if rows:
                with engine.begin() as conn:
                    conn.execute(insert, rows)
                total += len(rows)
            cursor = answer["nextCursor"]
            if not answer["hasMore"]:
                break
    engine.dispose()
    return Measurement("bare requests + executemany", records=total, seconds=t.seconds,
                       note="same endpoint and pages, raw fields only, one transaction per page")  # fmt: skip
