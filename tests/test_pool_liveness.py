"""A pooled PostgreSQL connection is checked before use: a dead one is replaced unseen, a live one costs no round trip.

What goes over the wire is read from libpq's own protocol trace of the pooled connection.
"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from hub.db import create_db_engine

PING = '";"'  # SQLAlchemy's ping on psycopg (an empty statement), as the protocol trace shows it


def _backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def _queries_of_next_checkout(engine: sa.Engine, trace_path) -> list[str]:
    """The queries the pooled connection sends while it is checked out once more and runs SELECT 2."""
    with engine.connect() as conn:
        pooled = conn.connection.dbapi_connection
    with trace_path.open("wb") as trace:
        pooled.pgconn.trace(trace.fileno())
        try:
            with engine.connect() as conn:
                assert conn.connection.dbapi_connection is pooled
                conn.execute(sa.text("SELECT 2"))
        finally:
            pooled.pgconn.untrace()
    lines = trace_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [line.split("\t")[-1].strip() for line in lines if "\tF\t" in line and "\tQuery\t" in line]


def test_a_connection_the_server_ended_is_replaced_without_an_error(pg_url):
    engine = create_db_engine(pg_url)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        ended = _backend_pid(engine)  # the connection now waits in the pool
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": ended}).scalar_one()
            deadline = time.monotonic() + 10
            alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p")
            while conn.execute(alive, {"p": ended}).scalar_one():
                assert time.monotonic() < deadline, "the backend did not end"
                time.sleep(0.02)
        # as after a database restart: the next transaction gets a new session, not AdminShutdown
        assert _backend_pid(engine) != ended
    finally:
        engine.dispose()
        admin.dispose()


@pytest.mark.parametrize(("idle_ping_seconds", "pinged"), [(30.0, False), (0.0, True)])
def test_a_connection_used_a_moment_ago_goes_without_a_ping_and_an_idle_one_with(
    pg_url, tmp_path, idle_ping_seconds, pinged
):
    engine = create_db_engine(pg_url, idle_ping_seconds=idle_ping_seconds)
    try:
        queries = _queries_of_next_checkout(engine, tmp_path / "trace.txt")
    finally:
        engine.dispose()
    assert '"SELECT 2"' in queries
    assert (PING in queries) is pinged
    if pinged:
        assert queries.index(PING) < queries.index('"SELECT 2"')
