"""Scenario 4's dataset into a migrated hub database: PostgreSQL COPY, SQLite executemany, no ORM per row.

The schema is the hub's own: Alembic creates it first. The secondary indexes (and, on
PostgreSQL, the unique and foreign-key constraints) of the three loaded tables are then
dropped, the rows loaded in large transactions, and the very definitions read back from the
database before dropping re-created — what a restore does, and 10^6 rows' worth faster than
maintaining a random-order index per row. A fingerprint of the whole schema taken before and
after must be equal, or the load fails: the queries are measured on exactly the migrated schema.
"""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable, Iterator

import sqlalchemy as sa

from bench.synthetic import COMPANY_COLUMNS, LICENCE_COLUMNS, VIOLATION_COLUMNS, ReviewDataset

__all__ = ["SchemaChanged", "load_review_dataset", "schema_fingerprint"]

TABLES = ("companies", "licences", "violations")
BATCH = 100_000  # rows per executemany / COPY transaction


class SchemaChanged(RuntimeError):
    """The schema after the load differs from the migrated one: the measurement would not be of the hub's schema."""


def schema_fingerprint(engine: sa.Engine) -> list[tuple]:
    """Every index and constraint with its full definition (PostgreSQL), or every schema object's SQL (SQLite)."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            indexes = conn.execute(sa.text("SELECT 'index', tablename, indexname, indexdef FROM pg_indexes "
                                           "WHERE schemaname = 'public'")).all()  # fmt: skip
            constraints = conn.execute(sa.text(
                "SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE connamespace = 'public'::regnamespace")).all()  # fmt: skip
            return sorted(tuple(r) for r in [*indexes, *constraints])
        return sorted(tuple(r) for r in conn.execute(sa.text("SELECT type, tbl_name, name, sql FROM sqlite_master")))


def _rows(data: ReviewDataset) -> dict[str, tuple[tuple[str, ...], int, Callable[[int, int], Iterator[tuple]]]]:
    return {"companies": (COMPANY_COLUMNS, data.companies, data.company_rows),
            "licences": (LICENCE_COLUMNS, data.licences, data.licence_rows),
            "violations": (VIOLATION_COLUMNS, data.violations, data.violation_rows)}  # fmt: skip


def _progress(label: str, table: str, done: int, total: int, started: float) -> None:
    print(f"[bench] review {label}: {table} {done:,}/{total:,} ({time.perf_counter() - started:.0f} s)",
          file=sys.stderr, flush=True)  # fmt: skip


def load_review_dataset(engine: sa.Engine, data: ReviewDataset, *, quiet: bool = False) -> float:
    """Load ``data`` into the (migrated, empty) database behind ``engine``; returns the seconds it took.

    Raises:
        SchemaChanged: the indexes or constraints after the load are not the migrated ones.
    """
    from contracts.registry import load_registry
    from hub.db import session_scope
    from hub.licences import ensure_agencies

    started = time.perf_counter()
    with session_scope(engine) as session:
        ensure_agencies(session, load_registry().values())
        # every agency freshly pulled, as in a hub in service: checks judge records, not staleness
        session.execute(sa.text("UPDATE agencies SET last_pull_at = :now"), {"now": data.now})
    before = schema_fingerprint(engine)
    report = None if quiet else (lambda table, done, total: _progress(engine.dialect.name, table, done, total, started))
    if engine.dialect.name == "postgresql":
        _load_postgres(engine, data, report)
    else:
        _load_sqlite(engine, data, report)
    after = schema_fingerprint(engine)
    if after != before:
        raise SchemaChanged(f"schema differs after the load: missing {sorted(set(before) - set(after))}, "
                            f"extra {sorted(set(after) - set(before))}")  # fmt: skip
    return time.perf_counter() - started


def _load_postgres(engine: sa.Engine, data: ReviewDataset, report) -> None:
    tables = list(TABLES)
    with engine.connect() as conn:
        # dependent first: foreign keys, then unique constraints, then plain indexes (primary keys stay)
        constraints = conn.execute(sa.text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid::regclass::text = ANY(:t) AND contype IN ('f', 'u') ORDER BY contype, conname"),
            {"t": tables}).all()  # fmt: skip
        named = {name for _, name, _ in constraints}
        indexes = [(name, sql) for name, sql in conn.execute(sa.text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(:t) "
            "AND indexname NOT LIKE 'pk\\_%'"), {"t": tables}) if name not in named]  # fmt: skip
        for table, name, _ in constraints:
            conn.execute(sa.text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
        for name, _ in indexes:
            conn.execute(sa.text(f'DROP INDEX "{name}"'))
        conn.commit()
    raw = engine.raw_connection()
    try:
        pg = raw.driver_connection
        pg.execute("SET synchronous_commit = off")
        for table, (columns, total, rows) in _rows(data).items():
            for start in range(0, total, BATCH):
                with pg.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows(start, start + BATCH):
                        copy.write_row(row)
                pg.commit()
                if report:
                    report(table, min(total, start + BATCH), total)
        pg.execute("SET maintenance_work_mem = '512MB'")  # this session's index builds only
        for name, sql in indexes:
            pg.execute(sql)
        for table, name, definition in reversed(constraints):  # unique constraints, then the keys that refer
            pg.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for table, (_, total, _) in _rows(data).items():
            pg.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {max(total, 1)}, {total > 0})")
            pg.execute(f"ANALYZE {table}")
        pg.commit()
    finally:
        raw.close()


def _sqlite_renderers(engine: sa.Engine, table: str, columns: tuple[str, ...]) -> list[tuple[int, Callable]]:
    """SQLAlchemy's own SQLite bind processors for dates, times and decimals: stored exactly as the hub stores them."""
    from hub.models import metadata

    out = []
    for i, name in enumerate(columns):
        column = metadata.tables[table].c[name]
        if isinstance(column.type, sa.JSON):
            continue  # the dataset gives JSON text already
        process = column.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
        if process is not None:
            out.append((i, process))
    return out


def _render(rows: Iterator[tuple], renderers: list[tuple[int, Callable]]) -> Iterator[list]:
    for row in rows:
        values = list(row)
        for i, process in renderers:
            if values[i] is not None:
                values[i] = process(values[i])
        yield values


def _load_sqlite(engine: sa.Engine, data: ReviewDataset, report) -> None:
    path = engine.url.database
    with engine.connect() as conn:
        indexes = conn.execute(sa.text(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL AND tbl_name IN "
            f"({', '.join(repr(t) for t in TABLES)})")).all()  # fmt: skip
    engine.dispose()  # the load needs the file to itself (journal mode)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        # no rollback journal and no fsync while loading a scratch file; foreign keys are off on a raw connection
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -1000000")
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        for table, (columns, total, rows) in _rows(data).items():
            insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            renderers = _sqlite_renderers(engine, table, columns)
            for start in range(0, total, BATCH):
                db.execute("BEGIN")
                db.executemany(insert, _render(rows(start, start + BATCH), renderers))
                db.execute("COMMIT")
                if report:
                    report(table, min(total, start + BATCH), total)
        for _, sql in indexes:
            db.execute(sql)
        db.execute("PRAGMA journal_mode = WAL")  # as hub.db leaves every hub database
    finally:
        db.close()
