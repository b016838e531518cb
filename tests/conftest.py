"""Shared fixtures: real SQLite files and a real PostgreSQL database; no mocks of our own code.

PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) tests skip with a reason when the
server is missing, and FAIL instead when HUB_REQUIRE_SERVICES=1 (as in CI).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.db import create_db_engine, migrate

REQUIRE_SERVICES = os.environ.get("HUB_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("HUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parent.parent


def service_missing(what: str, exc: Exception | None = None) -> None:
    message = f"{what} is not reachable ({exc}); start it, or unset HUB_REQUIRE_SERVICES to skip"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(f"{what} not reachable: {exc}")


@pytest.fixture(scope="session")
def pg_database_url():
    """A fresh PostgreSQL database for this test session, dropped at the end."""
    name = f"hub_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not usable here
        service_missing("PostgreSQL on 127.0.0.1:5432", exc)
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_pg(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture
def pg_url(pg_database_url):
    """An empty PostgreSQL database (schema dropped and recreated), not yet migrated."""
    _reset_pg(pg_database_url)
    return pg_database_url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path):
    """The same test on the embedded default and on PostgreSQL; empty, not migrated."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite3'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(db_url):
    """A migrated database on SQLite and on PostgreSQL."""
    eng = create_db_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path):
    eng = create_db_engine(f"sqlite:///{tmp_path / 'hub.sqlite3'}")
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def redis_url():
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                raise ConnectionError("unexpected answer to PING")
    except OSError as exc:
        service_missing("Redis on 127.0.0.1:6379", exc)
    return REDIS_URL


@pytest.fixture
def sample_licences() -> Path:
    return REPO / "contracts" / "samples" / "licences.jsonl"
