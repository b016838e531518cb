"""Storage on SQLite and PostgreSQL: idempotent upserts with history, identity linking, exact amounts, audit chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlmodel import Session, SQLModel, select

from adapters.base import payload_digest
from contracts.records import ViolationRecord
from contracts.registry import load_registry
from hub import audit
from hub.db import is_current, session_scope
from hub.licences import record_grants
from hub.models import AuditEntry, IdentityStatus, Violation, ViolationRevision
from hub.violations import StoreOutcome, store_violation, store_violations
from contracts.records import LicenceGrant
from tests.helpers import REPO, grant, make_uscc

AGENCY_USCC = "11120104MB0012343K"


def violation(record_id: str = "R1", **overrides) -> ViolationRecord:
    data = {
        "CF_XDR_MC": "天津测试1号有限公司", "CF_XDR_LB": "法人及非法人组织", "CF_XDR_SHXYM": make_uscc(1),
        "CF_WSH": "津南市监罚〔2026〕1号", "CF_WFXW": "未按规定公示年度报告", "CF_SY": "经查……",
        "CF_YJ": "《企业信息公示暂行条例》", "CF_CFLB": ["警告", "罚款"], "CF_NR": "警告并处罚款",
        "CF_NR_FK": "0.2", "CF_JDRQ": "2026-05-01", "CF_YXQ": "2027-05-01", "CF_CFJG": "南开区市场监管局",
        "CF_CFJGDM": AGENCY_USCC, "CF_SJLY": "南开区市场监管局", "CF_SJLYDM": AGENCY_USCC,
        "source_agency": "SCJG", "agency_record_id": record_id,
    }  # fmt: skip
    data.update(overrides)
    return ViolationRecord.model_validate({k: v for k, v in data.items() if v is not None})


def test_violation_upsert_is_idempotent_and_keeps_history(engine):
    with session_scope(engine) as s:
        assert store_violation(s, violation())[0] == StoreOutcome.CREATED
    with session_scope(engine) as s:
        assert store_violation(s, violation())[0] == StoreOutcome.UNCHANGED
    with session_scope(engine) as s:
        assert store_violation(s, violation(CF_NR_FK="0.123456"))[0] == StoreOutcome.UPDATED
    with Session(engine) as s:
        (row,) = s.exec(select(Violation)).all()
        assert row.fine == Decimal("0.123456") and row.version == 2
        assert [r.payload["CF_NR_FK"] for r in s.exec(select(ViolationRevision).order_by(ViolationRevision.version))] == ["0.2", "0.123456"]


def test_a_record_stored_by_an_earlier_hub_in_another_amount_form_is_unchanged_when_pulled_again(engine):
    """Before amounts had one normal form, 2,000.00 yuan was stored as "0.20"; the same record pulled again
    is "0.2". Content equal, it must not become a second revision of every such penalty at the next resync."""
    with session_scope(engine) as s:
        store_violation(s, violation(CF_NR_FK="0.2"))
    with session_scope(engine) as s:  # as the earlier hub left it
        row = s.exec(select(Violation)).one()
        row.payload = {**row.payload, "CF_NR_FK": "0.20"}
        row.digest = payload_digest(row.payload)
        s.add(row)
    for _ in range(2):
        with session_scope(engine) as s:
            assert store_violation(s, violation(CF_NR_FK="0.2"))[0] == StoreOutcome.UNCHANGED
            assert store_violations(s, [violation(CF_NR_FK="0.2")]) == [StoreOutcome.UNCHANGED]
    with Session(engine) as s:
        assert s.exec(select(Violation)).one().version == 1
        assert len(s.exec(select(ViolationRevision)).all()) == 1


def test_amounts_survive_exactly(engine):
    with session_scope(engine) as s:
        store_violation(s, violation(CF_NR_FK="123456789012.345678", CF_NR_WFFF="0.000001"))
    with Session(engine) as s:
        row = s.exec(select(Violation)).one()
        assert (row.fine, row.confiscated) == (Decimal("123456789012.345678"), Decimal("0.000001"))


def _licensed(engine, *numbers):
    with session_scope(engine) as s:
        record_grants(s, [LicenceGrant.model_validate(grant(n)) for n in numbers], load_registry(), actor="t")


def test_legacy_ids_link_when_unique_and_are_flagged_otherwise(engine):
    _licensed(engine, 1)
    org = make_uscc(1)[8:17]
    with session_scope(engine) as s:
        _, linked = store_violation(s, violation("L1", CF_XDR_SHXYM=None, CF_XDR_ZZJG=org))
        _, unknown = store_violation(s, violation("L2", CF_XDR_SHXYM=None, CF_XDR_GSZC="120104000099999"))
        assert linked.identity_status == IdentityStatus.LINKED and linked.company_id is not None
        assert unknown.identity_status == IdentityStatus.UNKNOWN and unknown.company_id is None
        assert "matches no known company" in unknown.identity_note


def test_sql_looking_text_is_stored_verbatim(engine):
    hostile = "'); DROP TABLE violations; --"
    with session_scope(engine) as s:
        store_violation(s, violation(CF_SY=hostile, CF_XDR_MC="Robert'); DROP TABLE companies;--"))
    with Session(engine) as s:
        assert s.exec(select(Violation)).one().payload["CF_SY"] == hostile


def test_audit_chain_verifies_and_names_the_first_altered_entry(engine):
    with session_scope(engine) as s:
        for i in range(5):
            audit.append(s, actor="t", action="test", subject=f"s{i}", detail={"i": i})
    with Session(engine) as s:
        assert audit.verify_chain(s) == (5, None)
        third = s.exec(select(AuditEntry).order_by(AuditEntry.id).offset(2)).first().id
    with engine.begin() as conn:
        conn.execute(sa.update(AuditEntry).where(AuditEntry.id == third).values(subject="tampered"))
    with Session(engine) as s:
        checked, broken = audit.verify_chain(s)
    assert checked == 2 and broken.entry_id == third and "altered" in broken.reason


def test_migrations_are_current(engine):
    assert is_current(engine)


def test_alembic_upgrade_then_check_reports_no_drift(db_url):
    env = {**os.environ, "HUB_DATABASE_URL": db_url}
    for args in (["upgrade", "head"], ["check"]):
        proc = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=REPO, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    assert "No new upgrade operations detected" in proc.stdout + proc.stderr


def test_workers_starting_together_each_find_the_schema_ready(db_url):
    """Four processes migrate one empty database at once, as workers do when they start together."""
    script = "import sys; from hub.db import create_db_engine, migrate; migrate(create_db_engine(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", script, db_url], cwd=REPO, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]  # fmt: skip
    failures = [err for proc in procs if (err := proc.communicate(timeout=120)[1]) and proc.returncode != 0]
    assert not failures, failures[0][-600:]
    engine = sa.create_engine(db_url)
    try:
        assert is_current(engine)
    finally:
        engine.dispose()


def test_contract_schemas_export(tmp_path):
    from contracts.schema import export_schemas

    paths = export_schemas(tmp_path)
    schema = json.loads((tmp_path / "violation-record.schema.json").read_text(encoding="utf-8"))
    assert {p.name for p in paths} == {"licence-grant.schema.json", "violation-record.schema.json"}
    assert "CF_NR_FK" in schema["properties"] and "CF_WSH" in schema["required"]
    assert schema["x-contract-version"]


def test_a_pages_digest_lookup_probes_its_ids_even_when_postgresql_has_no_statistics(pg_url):
    """An agency's records grow faster than the statistics: the lookup must not read them all per page.

    As ``agency_record_id = ANY(:ids)``, PostgreSQL without fresh statistics read every record of
    the agency for each page of a pull, through the first column of the unique index.
    """
    from hub.db import create_db_engine, migrate
    from hub.violations import _DIGESTS

    engine = create_db_engine(pg_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE violations SET (autovacuum_enabled = false)"))  # no analyse mid-test
        conn.execute(sa.text("""
            INSERT INTO violations (source_agency, agency_record_id, identity_status, subject_name, decision_no,
                                    decision_date, severity, penalty_types, validity_end, repair_status, version,
                                    digest, payload, created_at, updated_at)
            SELECT 'SCJG', 'SCJG-' || g, 'linked', 'c' || g, 'd' || g, DATE '2026-01-01', 'minor', '[]',
                   DATE '2027-01-01', 'none', 1, md5(g::text), '{}', now(), now()
            FROM generate_series(1, 30000) AS g"""))  # fmt: skip
    page = [f"SCJG-{n}" for n in range(29_001, 30_001)]  # the last page of a pull: already stored
    with Session(engine) as session:
        assert len(_DIGESTS.all(session, page, agency="SCJG")) == 1000
        lookup = str(_DIGESTS._probes.compile(dialect=engine.dialect))  # psycopg's own %(name)s placeholders
        plan = session.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {lookup}",
                                                    {"agency": "SCJG", "values": page}).scalar_one()[0]["Plan"]

    def rows_read(node: dict) -> int:
        return node.get("Actual Rows", 0) + node.get("Rows Removed by Filter", 0) + node.get(
            "Rows Removed by Index Recheck", 0) + sum(rows_read(child) for child in node.get("Plans", []))

    assert rows_read(plan) <= 3 * len(page), json.dumps(plan)[:2000]
    engine.dispose()


def _contract_limit(field) -> int | None:
    return min((m.max_length for m in field.metadata if getattr(m, "max_length", None) is not None), default=None)


# fixed by their own check (USCC, 工商注册号, 组织机构代码) or a closed vocabulary
_FORMAT_CHECKED = {"uscc", "reg_no", "org_code", "lifecycle", "severity", "repair_status"}


@pytest.mark.parametrize(("contract", "tables"), [(LicenceGrant, ("licences", "companies")),
                                                  (ViolationRecord, ("violations", "companies"))])  # fmt: skip
def test_every_text_a_contract_accepts_fits_the_column_that_stores_it(contract, tables):
    """Otherwise PostgreSQL refuses the row inside the page's transaction, and the page again on every
    retry, where the record should have been quarantined naming the field."""
    too_long = []
    for name, field in contract.model_fields.items():
        for table in tables:
            column = SQLModel.metadata.tables[table].c.get(name)
            length = getattr(column.type, "length", None) if column is not None else None
            limit = _contract_limit(field)
            if length and name not in _FORMAT_CHECKED and (limit is None or limit > length):
                too_long.append(f"{contract.__name__}.{name}: up to {limit} characters, {table}.{name} holds {length}")
    assert too_long == []
