"""bench.pgcost counts the PostgreSQL server's CPU, a backend's included once its session has ended."""

from __future__ import annotations

import time

import sqlalchemy as sa

from bench.pgcost import postgres_cpu_seconds


def test_a_finished_sessions_work_is_counted(pg_database_url):
    engine = sa.create_engine(pg_database_url, poolclass=sa.pool.NullPool)  # the session ends with the block
    before = postgres_cpu_seconds()
    with engine.connect() as conn:
        # ~0.9 s of a backend's CPU on the benchmark machine; a fast one still spends well over 0.1 s
        busy = conn.execute(sa.text("SELECT count(*) FROM generate_series(1, 6000000)")).scalar_one()
    engine.dispose()
    time.sleep(0.5)  # the postmaster reaps the backend and adds its CPU to its own children's
    assert busy == 6_000_000
    assert postgres_cpu_seconds() - before >= 0.1
