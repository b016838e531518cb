"""Scenario 4: reviewer queries (history and check) for random companies vs the bare SQL behind them.

The dataset is bulk-inserted with SQLAlchemy Core (companies, licences, violations in the
issue's proportions 1 : 2 : 5), since building it through intake would take longer than the
queries being measured. The hub side is hub.history.find_company + company_history and
hub.compliance.run_check (which also stores the check and audits it), in-process. The
baseline is the three indexed SELECTs a history needs (company by USCC, its licences, its
violations), fetched as rows.
"""

from __future__ import annotations

import datetime as dt
import random
import time

import sqlalchemy as sa

from bench.measure import Measurement, percentile
from bench.synthetic import company_name, synthetic_uscc

__all__ = ["build_dataset", "run_queries"]

CHUNK = 5000


def build_dataset(engine: sa.Engine, companies: int) -> None:
    """``companies`` companies, 2 licences and 5 violations each, plus the agency rows."""
    from contracts.registry import load_registry
    from hub.db import session_scope
    from hub.licences import ensure_agencies
    from hub.models import Company, Licence, Violation

    with session_scope(engine) as session:
        ensure_agencies(session, load_registry().values())
    now = dt.datetime.now(dt.UTC)
    today = dt.date.today()
    agencies = ("SCJG", "GAFJ", "JJZD", "GSJ", "DSJ", "XFZD", "GHFJ")
    with engine.begin() as conn:
        for start in range(0, companies, CHUNK):
            ids = range(start, min(companies, start + CHUNK))
            conn.execute(sa.insert(Company.__table__), [
                {"id": i + 1, "uscc": synthetic_uscc(i), "name": company_name(i), "category": "法人及非法人组织",
                 "org_code": synthetic_uscc(i)[8:17], "created_at": now, "updated_at": now} for i in ids])
            conn.execute(sa.insert(Licence.__table__), [
                {"decision_no": f"津南审批许字〔2026〕R{i:07d}-{k}号", "company_id": i + 1, "approval_item": "NK-SC-001",
                 "bureau_section": "市场准入科", "category": "普通", "lifecycle": "granted",
                 "decision_date": today - dt.timedelta(days=30 + k), "valid_from": today,
                 "valid_to": dt.date(2099, 12, 31), "version": 1, "digest": "0" * 64,
                 "payload": {"XK_NR": "预包装食品销售"}, "created_at": now, "updated_at": now}
                for i in ids for k in range(2)])
            conn.execute(sa.insert(Violation.__table__), [
                {"source_agency": agencies[(i + k) % 7], "agency_record_id": f"R-{i}-{k}", "company_id": i + 1,
                 "identity_status": "linked", "subject_name": company_name(i), "uscc": synthetic_uscc(i),
                 "decision_no": f"津南罚〔2026〕{i:07d}-{k}号", "decision_date": today - dt.timedelta(days=10 + 40 * k),
                 "severity": ("minor", "ordinary", "serious")[(i + k) % 3], "penalty_types": ["warning"],
                 "fine": None, "validity_end": today + dt.timedelta(days=300), "repair_status": "none",
                 "version": 1, "digest": "0" * 64, "payload": {"CF_WFXW": "违规停放车辆"},
                 "created_at": now, "updated_at": now}
                for i in ids for k in range(5)])  # fmt: skip
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('companies', 'id'), :n)"), {"n": companies})
            conn.execute(sa.text("ANALYZE"))


def _ms(fn, keys) -> list[float]:
    out = []
    for key in keys:
        start = time.perf_counter()
        fn(key)
        out.append((time.perf_counter() - start) * 1000)
    return out


def run_queries(engine: sa.Engine, companies: int, samples: int, *, seed: int = 1) -> list[Measurement]:
    """p50/p99 of history, check and the bare SQL, each over the same random companies."""
    from contracts.registry import load_registry
    from hub.compliance import load_rules, run_check
    from hub.db import session_scope
    from hub.history import company_history, find_company

    rng = random.Random(seed)
    keys = [synthetic_uscc(rng.randrange(companies)) for _ in range(samples)]
    registry, rules = load_registry(), load_rules()

    def history(uscc: str) -> None:
        with session_scope(engine) as session:
            company_history(session, find_company(session, uscc))

    def check(uscc: str) -> None:
        with session_scope(engine) as session:
            run_check(session, company=find_company(session, uscc), case_id="BENCH-1", actor="bench",
                      rules=rules, agencies=registry, freshness_hours=24)  # fmt: skip

    def bare(uscc: str) -> None:
        with engine.connect() as conn:
            cid = conn.execute(sa.text("SELECT id FROM companies WHERE uscc = :u"), {"u": uscc}).scalar_one()
            conn.execute(sa.text("SELECT * FROM licences WHERE company_id = :c ORDER BY decision_date, id"),
                         {"c": cid}).all()  # fmt: skip
            conn.execute(sa.text("SELECT * FROM violations WHERE company_id = :c ORDER BY decision_date, id"),
                         {"c": cid}).all()  # fmt: skip

    out = []
    for name, fn in (("bare SQL (3 SELECTs)", bare), ("hub history (in-process)", history),
                     ("hub check (in-process)", check)):  # fmt: skip
        fn(keys[0])  # warm caches and compiled statements alike for every side
        times = _ms(fn, keys)
        out.append(Measurement(name, records=len(times), seconds=sum(times) / 1000, p50_ms=percentile(times, 50),
                               p99_ms=percentile(times, 99)))  # fmt: skip
    return out
