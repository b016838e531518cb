"""SQLite's write-ahead log in a serving process: a thread checkpoints it, commits do not."""

from __future__ import annotations

import os
import time
from pathlib import Path

import sqlalchemy as sa

from hub.db import WalCheckpointer, create_db_engine

BLOB = 6 * 1024 * 1024  # ~1,500 pages of 4 KiB: past SQLite's 1,000-page automatic checkpoint


def _commit_blob(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, data BLOB)"))
        conn.execute(sa.text("INSERT INTO blobs (data) VALUES (randomblob(:n))"), {"n": BLOB})


def _database_file_size(path: Path) -> int:
    return os.stat(path).st_size  # the main file grows only when a checkpoint copies the log into it


def test_without_a_checkpointer_the_commit_that_fills_the_log_checkpoints(tmp_path):
    path = tmp_path / "hub.sqlite3"
    engine = create_db_engine(f"sqlite:///{path}")
    _commit_blob(engine)
    assert _database_file_size(path) > BLOB  # the contrast for the test below: SQLite's default at work
    engine.dispose()


def test_while_the_checkpointer_runs_a_commit_leaves_the_log_to_it(tmp_path):
    path = tmp_path / "hub.sqlite3"
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.connect():
        pass  # a pooled connection opened before the checkpointer starts must get its threshold too
    idle = WalCheckpointer(engine, every=3600).start()  # started, but not due before the test ends
    try:
        _commit_blob(engine)
        assert _database_file_size(path) < BLOB / 4, "the committing request paid for a checkpoint"
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 10_000
    finally:
        idle.stop()
    with engine.connect() as conn:  # stopped: nobody checkpoints for the engine, SQLite's default is back
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1_000
    engine.dispose()


def test_the_checkpointer_copies_the_log_into_the_database_in_the_background(tmp_path):
    path = tmp_path / "hub.sqlite3"
    engine = create_db_engine(f"sqlite:///{path}")
    checkpointer = WalCheckpointer(engine, every=0.05).start()
    try:
        _commit_blob(engine)
        deadline = time.monotonic() + 10
        while _database_file_size(path) < BLOB and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _database_file_size(path) > BLOB
    finally:
        checkpointer.stop()
        engine.dispose()


def test_on_postgresql_or_in_memory_there_is_nothing_to_checkpoint():
    engine = create_db_engine("sqlite://")
    checkpointer = WalCheckpointer(engine).start()
    assert checkpointer.path is None
    checkpointer.stop()
    engine.dispose()
