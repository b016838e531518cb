"""A file drop bigger than a page, through the hub on SQLite and PostgreSQL: each page commits on its
own with the cursor saying how far into the batch it got; a worker killed between pages is resumed
without loss or duplicates; a batch that fails its manifest loads nothing."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
from sqlmodel import Session, select

from hub.models import AuditEntry, InboundBatch, SyncCursor
from hub.sync import pull_agency
from sandbox.core import AgencyBook
from sandbox.filedrop_agencies import DIALECTS, start_filedrop_agency
from tests.helpers import REPO, make_uscc
from tests.sync.support import agency_table, pulled

CHUNK, COUNT = 7, 50
MALFORMED = {5, 12, 19, 26, 33, 40, 47}  # 1-based rows with an impossible decision date: quarantined
PAGES = math.ceil(COUNT / CHUNK)


@pytest.fixture(params=["XFZD", "GHFJ"])
def drop(request, tmp_path, monkeypatch):
    """A sandbox file-drop agency holding one penalty batch of COUNT records; yields (agency, overrides)."""
    code = request.param
    d = DIALECTS[code]
    book = AgencyBook(code=code, name=d.name, uscc=d.uscc, subject_fields=d.subject_fields, malformed_every=0)
    for n in range(1, COUNT + 1):
        book.add_penalty(subject_name=f"天津分页{n}号有限公司", uscc=make_uscc(50_000 + n),
                         **({"decision_date": "2026-13-45"} if n in MALFORMED else {}))  # fmt: skip
    running = start_filedrop_agency(code, root=tmp_path / "share", book=book, key_dir=tmp_path / "keys")
    table = {**agency_table(code)["filedrop"], "incomplete_grace": 3600, "claim_stale_after": 3600,
             "chunk_records": CHUNK}  # fmt: skip
    overrides = running.transport_overrides(table)
    if running.client_key_file:  # as deployed: the data file's credentials reference names the key
        overrides["transport"].pop("key_file")
        monkeypatch.setenv(f"HUB_{code}_SFTP_KEY", str(running.client_key_file))
    yield running, {code: overrides}
    running.stop()


def pull(runtime, code: str, **options):
    adapter = runtime.adapter_for(code)
    try:
        return pull_agency(runtime.engine, runtime.agency(code), adapter, **options)
    finally:
        adapter.close()


def held(engine, code: str):
    """(violation ids, quarantined refs, cursor token, loaded batches, page offsets in the audit log)."""
    ids, refs, _ = pulled(engine, code)
    with Session(engine) as session:
        cursor = session.get(SyncCursor, code)
        batches = [(b.batch_id, b.records, b.quarantined) for b in session.exec(select(InboundBatch)).all()]
        pages = [e.detail for e in session.exec(select(AuditEntry).where(AuditEntry.action == "pull.page")
                                                .order_by(AuditEntry.id)).all()]  # fmt: skip
    return ids, refs, cursor.token if cursor else None, batches, [(p["batch"], p["batch_offset"]) for p in pages]


def expected(running) -> tuple[list[str], list[str]]:
    drafts = running.book.penalties
    good = sorted(p.record_id for n, p in enumerate(drafts, 1) if n not in MALFORMED)
    bad = sorted(p.record_id for n, p in enumerate(drafts, 1) if n in MALFORMED)
    return good, bad


def names(running, folder: str) -> list[str]:
    return sorted(p.name for p in (running.root / folder).iterdir())


def test_a_batch_bigger_than_a_page_is_loaded_once_a_page_per_transaction(engine, make_runtime, drop):
    running, overrides = drop
    code = running.code
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), overrides)
    batch_id = running.publish()
    good, bad = expected(running)

    result = pull(runtime, code)

    ids, refs, token, batches, pages = held(runtime.engine, code)
    assert (result.pages, result.created, result.quarantined) == (PAGES, len(good), len(bad))
    assert sorted(ids) == good and sorted(refs) == bad
    assert token == batch_id and batches == [(batch_id, COUNT, len(bad))]
    assert pages == [(batch_id, offset) for offset in range(0, COUNT, CHUNK)]
    assert names(running, "processed") == [batch_id] and names(running, "processing") == []

    again = pull(runtime, code)
    assert (again.created, again.quarantined) == (0, 0) and held(runtime.engine, code)[:4] == (ids, refs, token, batches)


def test_a_pull_stopped_between_pages_leaves_what_it_committed_and_the_next_worker_finishes(engine, make_runtime,
                                                                                            drop):  # fmt: skip
    running, overrides = drop
    code = running.code
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), overrides)
    batch_id = running.publish()
    good, bad = expected(running)

    pull(runtime, code, max_pages=3)  # e.g. the worker lost its lease: its claim is still fresh

    ids, refs, token, batches, _ = held(runtime.engine, code)
    assert len(ids) + len(refs) == 3 * CHUNK and token == f"{batch_id}:{3 * CHUNK}"
    assert batches == [] and names(running, "processed") == []  # not loaded until its last page commits

    result = pull(runtime, code)

    ids, refs, token, batches, pages = held(runtime.engine, code)
    assert result.pages == PAGES - 3
    assert sorted(ids) == good and sorted(refs) == bad  # nothing lost, nothing twice
    assert pages == [(batch_id, offset) for offset in range(0, COUNT, CHUNK)]
    assert token == batch_id and batches == [(batch_id, COUNT, len(bad))]  # counted over both pulls
    assert names(running, "processed") == [batch_id] and names(running, "processing") == []


# The worker's own process, killed by SIGKILL inside the transaction of its 4th page (the fence
# runs in every page's transaction, before its commit): no clean-up, no rollback by our code.
KILLED_WORKER = """
import json, os, signal, sys
from hub.runtime import HubRuntime
from hub.settings import Settings
from hub.sync import pull_agency

args = json.loads(sys.argv[1])
runtime = HubRuntime(Settings(data_dir=args["data_dir"], database_url=args["db_url"], broker_url=None,
                              pki_dir=args["data_dir"] + "/no-pki"), overrides=args["overrides"])
pages = 0

def fence(session):
    global pages
    pages += 1
    if pages == args["die_in_page"]:
        os.kill(os.getpid(), signal.SIGKILL)

pull_agency(runtime.engine, runtime.agency(args["code"]), runtime.adapter_for(args["code"]), fence=fence)
"""


def test_a_worker_killed_between_pages_is_resumed_after_its_last_commit(engine, make_runtime, drop, tmp_path):
    running, overrides = drop
    code = running.code
    url = engine.url.render_as_string(hide_password=False)
    runtime = make_runtime(url, overrides)
    batch_id = running.publish()
    good, bad = expected(running)
    args = {"data_dir": str(tmp_path / "worker"), "db_url": url, "overrides": overrides, "code": code,
            "die_in_page": 4}  # fmt: skip

    worker = subprocess.run([sys.executable, "-c", KILLED_WORKER, json.dumps(args)], cwd=REPO, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip

    assert worker.returncode == -signal.SIGKILL, worker.stderr
    ids, refs, token, batches, _ = held(runtime.engine, code)
    assert len(ids) + len(refs) == 3 * CHUNK and token == f"{batch_id}:{3 * CHUNK}" and batches == []
    assert len(names(running, "processing")) == 1  # its claim, far from stale

    result = pull(runtime, code)

    ids, refs, token, batches, pages = held(runtime.engine, code)
    assert result.pages == PAGES - 3
    assert sorted(ids) == good and sorted(refs) == bad
    assert pages == [(batch_id, offset) for offset in range(0, COUNT, CHUNK)]
    assert token == batch_id and batches == [(batch_id, COUNT, len(bad))]  # counted over both pulls
    assert names(running, "processed") == [batch_id] and names(running, "processing") == []


def test_a_multi_page_batch_that_fails_its_manifest_loads_nothing(engine, make_runtime, drop):
    running, overrides = drop
    code = running.code
    runtime = make_runtime(engine.url.render_as_string(hide_password=False), overrides)
    dialect = DIALECTS[code]
    data = dialect.render([dialect.render_penalty(p, {}) for p in running.book.penalties])
    name = f"penalties.{dialect.format}"
    batch_id = running.agency.write_batch(data, file_name=name, manifest_patch={
        "files": [{"name": name, "size": len(data), "sha256": "0" * 64}]})  # fmt: skip

    result = pull(runtime, code)

    ids, refs, token, batches, _ = held(runtime.engine, code)
    assert (result.created, ids, batches) == (0, [], [])
    assert refs == [batch_id]  # the batch, quarantined whole with the reason
    assert names(running, "failed") == [batch_id, f"{batch_id}.error"]
    assert "SHA-256" in (running.root / "failed" / f"{batch_id}.error").read_text("utf-8")
