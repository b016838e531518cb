"""A check's evidence: the verdict and its audit entry commit together, concurrent checks share one chain, and
on SQLite the API checkpoints the log in the background."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from hub.audit import verify_chain
from hub.compliance import load_rules, run_check
from hub.db import session_scope
from hub.history import find_company
from hub.models import AuditEntry, ComplianceCheck


@pytest.fixture(params=["sqlite", "postgres"])
def any_hub(request):
    return request.getfixturevalue("hub" if request.param == "sqlite" else "pg_hub")


def _check(hub, uscc: str, case: str, session=None, *, commit: bool = False):
    def run(s):
        return run_check(s, company=find_company(s, uscc), case_id=case, actor="reviewer:wang", rules=load_rules(),
                         agencies=hub.runtime.registry, freshness_hours=24, commit=commit)  # fmt: skip

    if session is not None:
        return run(session)
    with session_scope(hub.engine) as s:
        return run(s)


def _evidence(hub) -> tuple[list[int], list[int]]:
    """Stored check ids, and the check ids the review.check audit entries name."""
    with Session(hub.engine) as session:
        checks = session.exec(select(ComplianceCheck.id)).all()
        entries = session.exec(select(AuditEntry).where(AuditEntry.action == "review.check")).all()
        return sorted(checks), sorted(e.detail["check_id"] for e in entries)


@pytest.mark.parametrize("commit", [False, True], ids=["caller-commits", "committed-with-entry"])
def test_concurrent_checks_each_leave_one_entry_on_one_unbroken_chain(any_hub, uscc, commit):
    """``commit=True`` is how the API and the web page check: on PostgreSQL the check's row then goes
    with its audit entry and the COMMIT, under the writers' lock, with the id drawn beforehand."""
    any_hub.grant(1, XK_XDR_SHXYM=uscc)
    any_hub.pulled()
    reviewers, each = 4, 8
    start = threading.Barrier(reviewers)

    def reviewer(n: int) -> None:
        start.wait()  # all at once: the writers' lock, not luck, must keep them from chaining onto one head
        for i in range(each):
            _check(any_hub, uscc, case=f"CASE-{n}-{i}", commit=commit)

    with ThreadPoolExecutor(reviewers) as pool:
        for done in [pool.submit(reviewer, n) for n in range(reviewers)]:
            done.result()

    checks, audited = _evidence(any_hub)
    assert len(checks) == reviewers * each and audited == checks
    with Session(any_hub.engine) as session:
        checked, broken = verify_chain(session)
    assert broken is None and checked >= reviewers * each


def test_a_check_whose_transaction_fails_leaves_neither_its_verdict_nor_its_audit_entry(any_hub, uscc):
    any_hub.grant(1, XK_XDR_SHXYM=uscc)
    any_hub.pulled()

    with pytest.raises(RuntimeError), session_scope(any_hub.engine) as session:
        _check(any_hub, uscc, "CASE-LOST", session=session)
        raise RuntimeError("the request failed after the check was judged")
    assert _evidence(any_hub) == ([], [])

    kept = _check(any_hub, uscc, "CASE-KEPT")
    assert _evidence(any_hub) == ([kept.check_id], [kept.check_id])


def test_a_check_whose_row_the_server_refuses_commits_neither_it_nor_its_entry(pg_hub, uscc):
    """The row goes in one round trip with the audit entry and the COMMIT: when the server refuses
    the row, neither the entry nor the COMMIT may run, and the pool's connection must still work."""
    pg_hub.grant(1, XK_XDR_SHXYM=uscc)
    pg_hub.pulled()
    with pytest.raises(sa.exc.DBAPIError, match="too long"), session_scope(pg_hub.engine) as session:
        _check(pg_hub, uscc, "C" * 201, session=session, commit=True)  # case_id is VARCHAR(200)
    assert _evidence(pg_hub) == ([], [])

    kept = _check(pg_hub, uscc, "CASE-KEPT", commit=True)
    assert _evidence(pg_hub) == ([kept.check_id], [kept.check_id])
    with Session(pg_hub.engine) as session:
        assert verify_chain(session)[1] is None


def _in_database_file(path: str, check_id: int) -> bool:
    """Whether the stored check has reached the database file itself (immutable: the WAL is not read)."""
    with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
        if not db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'compliance_checks'").fetchone()[0]:
            return False  # even the schema is still only in the log
        return db.execute("SELECT count(*) FROM compliance_checks WHERE id = ?", (check_id,)).fetchone()[0] == 1


def test_while_the_api_runs_it_checkpoints_the_sqlite_log_so_request_commits_need_not(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    path = hub.engine.url.database
    check_id = _check(hub, uscc, "CASE-WAL").check_id
    assert not _in_database_file(path, check_id)  # committed to the log; nothing has checkpointed it yet

    with hub.client():  # the application's lifespan: what `hub serve` runs
        deadline = time.monotonic() + 30
        while not _in_database_file(path, check_id) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _in_database_file(path, check_id)
