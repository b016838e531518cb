"""A benchmark's scratch SQLite database is gone once its side is measured, not at the end of the run."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from bench.dbs import database


def test_a_sqlite_scratch_database_and_the_files_beside_it_are_deleted_on_leaving(tmp_path):
    kept = tmp_path / "another-side.sqlite3"
    kept.write_bytes(b"")
    with database("sqlite", tmp_path, "pull_dlt") as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        path = Path(sa.engine.make_url(url).database)
        (path.parent / f"{path.stem}__dlt_dataset.sqlite3").write_bytes(b"as dlt attaches a dataset")
        assert path.exists()
        engine.dispose()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["another-side.sqlite3"]
