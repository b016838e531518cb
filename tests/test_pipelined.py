"""Statements sharing a round trip (hub.pipelined) and the audit entry committed with its INSERT.

On PostgreSQL both go through psycopg's pipeline mode, beside SQLAlchemy; they must give back
exactly what SQLAlchemy gives, and fail as SQLAlchemy fails.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlmodel import Session, select

from contracts.records import LicenceGrant
from contracts.registry import load_registry
from hub import audit
from hub.db import create_db_engine, migrate, session_scope
from hub.history import _LICENCES, _VIOLATIONS_ORDERED, CompanyHistory, company_history, find_company, reviewed_history
from hub.licences import record_grants
from hub.models import AuditEntry, Company
from hub.pipelined import select_together
from hub.violations import store_violation
from tests.helpers import grant, make_uscc
from tests.test_storage import violation


@pytest.fixture
def company(engine) -> int:
    """A company with licences (delivered to several agencies) and violations with fines and JSON lists."""
    uscc = make_uscc(1)
    with session_scope(engine) as s:
        grants = [grant(1), grant(2, XK_XDR_SHXYM=uscc, XK_XDR_MC="天津测试1号有限公司")]
        record_grants(s, [LicenceGrant.model_validate(g) for g in grants], load_registry(), actor="t")
        store_violation(s, violation("R1", CF_NR_FK="123456789012.345678"))
        store_violation(s, violation("R2", CF_NR_FK=None, CF_CFLB=["警告"], CF_JDRQ="2025-01-31"))
    with Session(engine) as s:
        return find_company(s, uscc).id


def test_reads_together_give_what_sqlalchemy_gives(engine, company):
    queries = [(_LICENCES, {"cid": company}), (_VIOLATIONS_ORDERED, {"cid": company}),
               (sa.select(Company.__table__).where(Company.__table__.c.id == -1), {})]  # fmt: skip
    with engine.connect() as conn:
        expected = [conn.execute(query, params).all() for query, params in queries]
    with engine.connect() as conn:
        licences, violations, nobody = select_together(conn, queries)
    assert [tuple(r) for r in licences] == [tuple(r) for r in expected[0]] and len(licences) >= 2
    assert [tuple(r) for r in violations] == [tuple(r) for r in expected[1]] and len(violations) == 2
    assert nobody == []
    warned, fined = violations  # by decision date
    assert (fined.fine, warned.fine) == (expected[1][1].fine, None) and str(fined.fine) == "123456789012.345678"
    assert warned.penalty_types == ["警告"] and warned.decision_date.isoformat() == "2025-01-31"
    assert licences[0].decision_no == expected[0][0].decision_no and licences[0].d_agency_code


def test_a_failing_read_raises_as_sqlalchemy_does_and_the_connection_goes_on(engine, company):
    broken = sa.select(sa.column("n")).select_from(sa.table("no_such_table"))
    with engine.connect() as conn:
        with pytest.raises(sa.exc.DBAPIError):
            select_together(conn, [(_VIOLATIONS_ORDERED, {"cid": company}), (broken, {})])
        conn.rollback()
        assert len(select_together(conn, [(_VIOLATIONS_ORDERED, {"cid": company})])[0]) == 2


def test_an_entry_appended_with_commit_is_committed_and_chained(engine):
    with Session(engine) as s:
        audit.append(s, actor="t", action="test", subject="first")
        second = audit.append(s, actor="t", action="test", subject="second", detail={"case": "C-1"}, commit=True)
        assert not s.in_transaction()
        s.add(AuditEntry(at=s.get(AuditEntry, second).at, actor="t", action="x", subject="rolled back",
                         detail={}, prev_hash="0" * 64, entry_hash="f" * 64))  # fmt: skip
        s.rollback()  # what the request's session does at its end: nothing of the commit is undone
    with Session(engine) as s:
        assert [e.subject for e in s.exec(select(AuditEntry).order_by(AuditEntry.id))] == ["first", "second"]
        assert audit.verify_chain(s) == (2, None)
        third = audit.append(s, actor="t", action="test", subject="third", commit=True)
    with Session(engine) as s:
        assert s.get(AuditEntry, third).prev_hash == s.get(AuditEntry, second).entry_hash
        assert audit.verify_chain(s) == (3, None)


def test_an_entry_the_server_refuses_commits_nothing(pg_url):
    """On PostgreSQL the INSERT and COMMIT share a pipeline: when the INSERT fails, the COMMIT must not run."""
    engine = create_db_engine(pg_url)
    migrate(engine)
    try:
        with Session(engine) as s:
            s.connection().execute(sa.insert(Company.__table__).values(uscc=make_uscc(7), name="甲", category="法人"))
            with pytest.raises(sa.exc.DBAPIError, match="too long"):
                audit.append(s, actor="t", action="test", subject="x" * 501, commit=True)  # VARCHAR(500)
            s.rollback()
        with Session(engine) as s:
            assert s.exec(select(Company)).all() == [] and s.exec(select(AuditEntry)).all() == []
            audit.append(s, actor="t", action="test", subject="after", commit=True)  # the pool's connection still works
            assert audit.verify_chain(s) == (1, None)
    finally:
        engine.dispose()


def _lookup(engine, uscc: str, case: str) -> CompanyHistory:
    with Session(engine) as s:
        return reviewed_history(s, find_company(s, uscc), None, actor="reviewer:li", detail={"case": case})


def test_a_reviewed_history_is_what_company_history_gives_and_its_lookup_is_committed_on_the_chain(engine, company):
    uscc = make_uscc(1)
    with Session(engine) as s:
        expected = company_history(s, find_company(s, uscc))
    assert _lookup(engine, uscc, "NK-1") == expected and len(expected.violations) + expected.hidden == 2
    with Session(engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "review.history")).one()
        assert (entry.actor, entry.subject, entry.detail) == ("reviewer:li", f"company:{uscc}", {"case": "NK-1"})
        assert audit.verify_chain(s)[1] is None


def test_concurrent_reviewed_histories_chain_one_after_another(engine, company):
    """The lock is taken with the history's reads: lookups at once must still each chain onto the last."""
    reviewers, each = 4, 6
    start = threading.Barrier(reviewers)

    def reviewer(n: int) -> None:
        start.wait()
        for i in range(each):
            _lookup(engine, make_uscc(1), f"NK-{n}-{i}")

    with ThreadPoolExecutor(reviewers) as pool:
        for done in [pool.submit(reviewer, n) for n in range(reviewers)]:
            done.result()
    with Session(engine) as s:
        cases = [e.detail["case"] for e in s.exec(select(AuditEntry).where(AuditEntry.action == "review.history"))]
        checked, broken = audit.verify_chain(s)
    assert sorted(cases) == sorted(f"NK-{n}-{i}" for n in range(reviewers) for i in range(each))
    assert broken is None and checked >= reviewers * each


def test_a_head_is_chained_onto_once_and_only_in_its_own_transaction(engine):
    with Session(engine) as s:
        audit.append(s, actor="t", action="test", subject="first", commit=True)
        _, head = audit.select_with_head(s.connection(), [])
        audit.append(s, actor="t", action="test", subject="second", head=head)
        with pytest.raises(ValueError, match="chained onto already"):
            audit.append(s, actor="t", action="test", subject="forked", head=head)
        s.commit()
        _, stale = audit.select_with_head(s.connection(), [])
        s.commit()
        with pytest.raises(ValueError, match="another transaction"):
            audit.append(s, actor="t", action="test", subject="stale", head=stale, commit=True)
        s.rollback()
    with Session(engine) as s:
        assert [e.subject for e in s.exec(select(AuditEntry).order_by(AuditEntry.id))] == ["first", "second"]
        assert audit.verify_chain(s) == (2, None)
