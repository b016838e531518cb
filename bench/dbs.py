"""Scratch databases for one benchmark run: a SQLite file, or a PostgreSQL database dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

__all__ = ["PG_ADMIN_URL", "database", "pg_available"]

PG_ADMIN_URL = os.environ.get("HUB_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def pg_available() -> bool:
    try:
        engine = sa.create_engine(PG_ADMIN_URL)
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


@contextlib.contextmanager
def database(kind: str, work: Path, label: str) -> Iterator[str]:
    """A fresh, empty database URL of ``kind`` ('sqlite' or 'postgres'), dropped or deleted after.

    A full run's SQLite files came to 18 GB (the reviewer's alone 9.7 GB) when each stayed until
    the run ended.
    """
    if kind == "sqlite":
        path = work / f"{label}-{uuid.uuid4().hex[:6]}.sqlite3"
        try:
            yield f"sqlite:///{path}"
        finally:
            # with its -wal and -shm, and the files dlt attaches for its datasets (<name>__<dataset>.sqlite3)
            for left in work.glob(f"{path.stem}*"):
                left.unlink(missing_ok=True)
        return
    name = f"hub_bench_{label}_{uuid.uuid4().hex[:6]}".lower()
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
