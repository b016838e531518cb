"""Several small statements in one round trip to PostgreSQL (psycopg's pipeline mode).

A reviewer's lookup is a handful of indexed reads and one audit entry. Each statement costs the
server microseconds, but the client waits for each answer before sending the next: on the
benchmark machine a round trip was 0.3-0.4 ms of a 2-3 ms lookup, and on a deployment whose
database is on another host it is the network's round-trip time. Where a driver has no
pipeline (SQLite, or another PostgreSQL driver) the statements simply run one after another,
with the same results.

The statements are SQLAlchemy Core statements, compiled once per statement object and run on
the caller's connection in the caller's transaction: psycopg starts it (BEGIN) if none is open,
as it would for any statement. A driver error is raised as SQLAlchemy's ``DBAPIError``, what
callers catch for any statement sent through SQLAlchemy.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

__all__ = ["pipelines", "select_together"]


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
    binds = {}
    for name, bind in compiled.binds.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            binds[name] = process
    keys = list(statement.selected_columns.keys())
    types = tuple(column.type.dialect_impl(dialect) for column in statement.selected_columns)
    return _Compiled(compiled.string, compiled, binds, namedtuple("Row", keys), types)


def _parameters(plan: _Compiled, params: Mapping[str, Any]) -> dict[str, Any]:
    values = plan.compiled.construct_params(dict(params))
    for name, process in plan.binds.items():
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
    try:
        with pg.pipeline():
            for cursor, (plan, params) in zip(cursors, plans, strict=True):
                cursor.execute(plan.sql, _parameters(plan, params))
        return [_rows(plan, dialect, cursor) for cursor, (plan, _) in zip(cursors, plans, strict=True)]
    except dialect.loaded_dbapi.Error as exc:
        sql = ";\n".join(plan.sql for plan, _ in plans)  # which one failed, the driver's message says
        raise sa.exc.DBAPIError.instance(sql, None, exc, dialect.loaded_dbapi.Error) from exc
    finally:
        for cursor in cursors:
            cursor.close()
