"""store_violations (the batched page path the benchmarks drove) stores what store_violation would, one by one."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import Session, select

from hub.db import session_scope
from hub.models import Company, IdentityStatus, Violation, ViolationRevision
from hub.violations import StoreOutcome, store_violation, store_violations
from tests.helpers import make_uscc
from tests.test_storage import violation


def _snapshot(engine) -> list[tuple]:
    with Session(engine) as s:
        companies = {c.id: c.uscc for c in s.exec(select(Company)).all()}
        rows = s.exec(select(Violation).order_by(Violation.agency_record_id)).all()
        revisions = {(r.violation_id, r.version) for r in s.exec(select(ViolationRevision)).all()}
        return [(v.agency_record_id, v.digest, v.version, v.fine, companies.get(v.company_id), v.identity_status,
                 (v.id, v.version) in revisions) for v in rows]  # fmt: skip


def test_a_page_gives_the_same_outcomes_and_rows_as_one_record_at_a_time(engine):
    with session_scope(engine) as s:
        store_violation(s, violation("OLD-SAME"))
        store_violation(s, violation("OLD-CHANGED"))
    page = [
        violation("NEW-1"),
        violation("NEW-2", CF_XDR_SHXYM=make_uscc(2), CF_XDR_MC="天津测试2号有限公司"),
        violation("OLD-SAME"),
        violation("OLD-CHANGED", CF_NR_FK="0.5"),
        violation("NEW-1", CF_NR_FK="0.7"),  # the same record again, corrected, within one page
        violation("LEGACY", CF_XDR_SHXYM=None, CF_XDR_GSZC="120104000099999"),
    ]

    with session_scope(engine) as s:
        outcomes = store_violations(s, page)

    assert outcomes == [StoreOutcome.CREATED, StoreOutcome.CREATED, StoreOutcome.UNCHANGED, StoreOutcome.UPDATED,
                        StoreOutcome.UPDATED, StoreOutcome.CREATED]  # fmt: skip
    rows = {r[0]: r for r in _snapshot(engine)}
    assert rows["NEW-1"][2:4] == (2, Decimal("0.7")) and rows["NEW-1"][4] == make_uscc(1)
    assert rows["NEW-2"][4] == make_uscc(2) and rows["NEW-2"][5] == IdentityStatus.LINKED
    assert rows["LEGACY"][5] == IdentityStatus.UNKNOWN
    assert all(r[6] for r in rows.values())  # every current version has its revision
    with session_scope(engine) as s:
        assert store_violations(s, page[1:3]) == [StoreOutcome.UNCHANGED, StoreOutcome.UNCHANGED]


def test_a_page_stores_each_payload_as_a_json_object_equal_to_the_record(engine):
    page = [violation("P-1"), violation("P-2", CF_NR_FK="1.5")]
    with session_scope(engine) as s:
        store_violations(s, page)
    json_type = "json_typeof" if engine.dialect.name == "postgresql" else "json_type"
    with Session(engine) as s:
        stored = {v.agency_record_id: v for v in s.exec(select(Violation)).all()}
        for record in page:
            row = stored[record.agency_record_id]
            assert row.payload == record.model_dump(mode="json", by_alias=True, exclude_none=True)
            revision = s.exec(select(ViolationRevision).where(ViolationRevision.violation_id == row.id)).one()
            assert revision.payload == row.payload
        for table in ("violations", "violation_revisions"):
            kinds = s.connection().exec_driver_sql(f"SELECT DISTINCT {json_type}(payload) FROM {table}").scalars().all()
            assert kinds == ["object"]


def test_a_page_written_in_bulk_reads_back_exactly_as_one_written_through_the_orm(engine):
    """The bulk path (COPY / a plain executemany) stores the same values: dates, exact amounts,
    aware timestamps, lists, the payload — so nothing downstream can tell which path wrote a row."""
    alike = {"CF_NR_FK": "0.123456", "CF_GSJZQ": "2028-05-01", "CF_CFLB": ["警告", "罚款", "没收违法所得"],
             "CF_NR_WFFF": "12.5"}  # fmt: skip
    with session_scope(engine) as s:
        store_violation(s, violation("ORM", **alike))
    with session_scope(engine) as s:
        assert store_violations(s, [violation("BULK", **alike)]) == [StoreOutcome.CREATED]
    with Session(engine) as s:
        by_id = {v.agency_record_id: v for v in s.exec(select(Violation)).all()}
        orm, bulk = by_id["ORM"].model_dump(), by_id["BULK"].model_dump()
        for varying in ("id", "agency_record_id", "digest", "payload", "created_at", "updated_at"):
            orm.pop(varying), bulk.pop(varying)
        assert bulk == orm
        assert isinstance(by_id["BULK"].fine, Decimal) and by_id["BULK"].created_at.utcoffset() is not None
        revision = s.exec(select(ViolationRevision).where(ViolationRevision.violation_id == by_id["BULK"].id)).one()
        assert revision.recorded_at.utcoffset() is not None and revision.payload == by_id["BULK"].payload
