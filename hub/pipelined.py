"""Several small statements in one round trip to PostgreSQL (psycopg's pipeline mode).

A reviewer's lookup is a handful of indexed reads and one audit entry. Each statement costs the
server microseconds, but the client waits for each answer before sending the next. Over loopback
on the benchmark machine a round trip cost 0.1-0.4 ms, and saving two of a lookup's seven did not
stand out of that machine's noise (bench/analysis.md, eighth round); with the database on another
host each one is the network's round-trip time. ``select_together`` sends a lookup's reads
together; ``write_and_commit`` its last writes with the COMMIT. Where a driver has no pipeline
(SQLite, or another PostgreSQL driver) the statements run one after another, with the same results.

The statements are SQLAlchemy Core statements, compiled once per statement object and run on
the caller's connection in the caller's transaction: psycopg starts it (BEGIN) if none is open,
as it would for any statement. A driver error is raised as SQLAlchemy's ``DBAPIError``, what
callers catch for any statement sent through SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import functools
from collections import namedtuple
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

__all__ = ["as_sqlalchemy_error", "pipelines", "reading_connection", "select_together", "write_and_commit"]


def reading_connection(session) -> sa.Connection:
    """The session's connection, for Core reads that bypass the ORM.

    The caller's pending rows are flushed first (when the session autoflushes), so the reads
    see them as an ORM query would.
    """
    if session.autoflush:
        session.flush()
    return session.connection()


def pipelines(conn: sa.Connection) -> bool:
    """True when statements on ``conn`` can share a round trip (psycopg)."""
    return conn.dialect.driver == "psycopg"


@dataclass(frozen=True)
class _Compiled:
    sql: str
    compiled: sa.sql.compiler.Compiled
    binds: dict[str, Callable[[Any], Any]]  # bind parameter name -> the type's bind processor
    row: type  # a named tuple of the selected columns' keys: rows read like SQLAlchemy's
    results: tuple[sa.types.TypeEngine, ...]  # each column's type, adapted to the dialect


@functools.lru_cache(maxsize=64)  # module-level statements, plus a few filtered variants
def _compile(statement: sa.Select, dialect: sa.engine.Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    if "POSTCOMPILE" in compiled.string:
        raise ValueError("select_together takes statements whose SQL is final at compile time (no expanding IN)")
    keys = list(statement.selected_columns.keys())
    types = tuple(column.type.dialect_impl(dialect) for column in statement.selected_columns)
    return _Compiled(compiled.string, compiled, _bind_processors(compiled, dialect), namedtuple("Row", keys), types)


def _bind_processors(compiled: sa.sql.compiler.Compiled, dialect: sa.engine.Dialect) -> dict[str, Callable]:
    binds = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds[name] = process
    return binds


def _parameters(compiled: sa.sql.compiler.Compiled, binds: Mapping[str, Callable],
                params: Mapping[str, Any]) -> dict[str, Any]:  # fmt: skip
    values = compiled.construct_params(dict(params))
    for name, process in binds.items():
        if name in values:
            values[name] = process(values[name])
    return values


def _rows(plan: _Compiled, dialect: sa.engine.Dialect, cursor) -> list[tuple]:
    processors = [kind.result_processor(dialect, column.type_code)
                  for kind, column in zip(plan.results, cursor.description, strict=True)]  # fmt: skip
    make = plan.row._make
    if not any(processors):
        return [make(row) for row in cursor.fetchall()]
    return [make(value if process is None else process(value) for process, value in zip(processors, row))
            for row in cursor.fetchall()]  # fmt: skip


def select_together(conn: sa.Connection, queries: Sequence[tuple[sa.Select, Mapping[str, Any]]]) -> list[list]:
    """Run SELECTs in order; their rows (attributes named as the selected columns), one list per query.

    On psycopg all of them go to the server in one round trip; elsewhere one after another.
    """
    if not pipelines(conn):
        return [conn.execute(query, params).all() for query, params in queries]
    dialect = conn.dialect
    plans = [(_compile(query, dialect), params) for query, params in queries]
    if not conn.in_transaction():
        conn.begin()  # as conn.execute would: the caller's commit or rollback then ends what psycopg begins
    pg = conn.connection.driver_connection
    cursors = [pg.cursor() for _ in plans]
    # which statement failed, the driver's message says
    try:
        with as_sqlalchemy_error(dialect, ";\n".join(plan.sql for plan, _ in plans)), pg.pipeline():
            for cursor, (plan, params) in zip(cursors, plans, strict=True):
                cursor.execute(plan.sql, _parameters(plan.compiled, plan.binds, params))
        return [_rows(plan, dialect, cursor) for cursor, (plan, _) in zip(cursors, plans, strict=True)]
    finally:
        for cursor in cursors:
            cursor.close()


@functools.lru_cache(maxsize=16)  # the INSERTs of every reviewer lookup (its audit entry, a check): compiled once
def _compile_insert(statement: sa.Insert, dialect: sa.engine.Dialect,
                    keys: tuple[str, ...]) -> tuple[sa.sql.compiler.Compiled, dict[str, Callable]]:  # fmt: skip
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    return compiled, _bind_processors(compiled, dialect)


def write_and_commit(conn: sa.Connection, writes: Sequence[tuple[sa.Insert, Mapping[str, Any]]]) -> list[tuple | None]:
    """Execute the INSERTs, each with its values, in order, and COMMIT, in one round trip (psycopg only).

    The COMMIT goes as a statement in the pipeline: ``connection.commit()`` would wait for a sync of
    its own. If an INSERT fails, nothing after it runs, the COMMIT included (the pipeline is
    aborted), and the error is raised as SQLAlchemy's, so the caller's session rolls back as after
    any failed statement. The caller then ends its SQLAlchemy transaction (``commit()``), which
    finds the driver's already committed and sends nothing.

    Returns:
        Each INSERT's RETURNING row, or None for one without RETURNING.
    """
    dialect = conn.dialect
    plans = []
    for statement, values in writes:
        compiled, binds = _compile_insert(statement, dialect, tuple(values))
        plans.append((compiled.string, _parameters(compiled, binds, values)))
    pg = conn.connection.driver_connection
    cursors = [pg.cursor() for _ in plans]
    try:
        with pg.cursor() as end:
            with as_sqlalchemy_error(dialect, ";\n".join(sql for sql, _ in plans)), pg.pipeline():
                for cursor, (sql, params) in zip(cursors, plans, strict=True):
                    cursor.execute(sql, params)
                end.execute("COMMIT")
        return [cursor.fetchone() if cursor.description is not None else None for cursor in cursors]
    finally:
        for cursor in cursors:
            cursor.close()


@contextlib.contextmanager
def as_sqlalchemy_error(dialect: sa.engine.Dialect, sql: str) -> Iterator[None]:
    """A driver error, raised as SQLAlchemy's (what callers catch for any statement), for SQL sent
    to the driver directly (here, and hub.bulk's COPY and executemany)."""
    try:
        yield
    except dialect.loaded_dbapi.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
