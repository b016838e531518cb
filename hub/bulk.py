"""Inserting many rows at the database driver's own speed, inside the caller's transaction.

SQLAlchemy's executemany builds a parameter dict and runs every bind processor through its
compiled-statement machinery once per row; for a pull page that bookkeeping cost more than
the database's work (docs/benchmarks.md). Here each column's bind processor is looked up once
per call and the rows go to the driver as plain tuples: ``COPY … FROM STDIN`` on PostgreSQL,
the ``executemany`` of sqlite3 on SQLite. The values stored are the ones SQLAlchemy would
store: the same processors (dates as SQLite text, exact decimals, UTC timestamps) are applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Session

from hub.pipelined import as_sqlalchemy_error

__all__ = ["MatchingRows", "bulk_insert", "new_ids"]

_IN_CHUNK = 500  # values per IN (...) list on SQLite: far below its parameter limit


def _processors(table: sa.Table, columns: Sequence[str], dialect) -> list:
    found = []
    for name in columns:
        column_type = table.c[name].type
        # JSON columns are handed over as their JSON text, serialised once by the caller
        found.append(None if isinstance(column_type, sa.JSON) else column_type.dialect_impl(dialect).bind_processor(dialect))
    return found


def bulk_insert(session: Session, table: sa.Table, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """Insert ``rows`` (tuples in ``columns`` order) and return how many were written.

    Values are what the ORM would be given, except JSON columns: those take the JSON text.
    The rows must be new; a duplicate key fails the statement, and with it the transaction.
    """
    connection = session.connection()
    dialect = connection.dialect
    processors = _processors(table, columns, dialect)
    pairs = [(i, p) for i, p in enumerate(processors) if p is not None]
    last: dict[int, tuple] = {}  # per column, the last value processed: a page's timestamps are one value

    def ready(row: Sequence) -> Sequence:
        if not pairs:
            return row
        values = list(row)
        for i, process in pairs:
            value = values[i]
            seen = last.get(i)
            if seen is not None and seen[0] is value:
                values[i] = seen[1]
            else:
                values[i] = process(value)
                last[i] = (value, values[i])
        return values

    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(name) for name in columns)
    driver = connection.connection.driver_connection
    if dialect.name == "postgresql":
        statement = f"COPY {quote(table.name)} ({names}) FROM STDIN"
    else:
        statement = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' * len(columns))})"
    written = 0
    # errors as the same classes (IntegrityError, OperationalError…) a SQLAlchemy statement raises
    with contextlib.closing(driver.cursor()) as cursor, as_sqlalchemy_error(dialect, statement):
        if dialect.name == "postgresql":
            with cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(ready(row))
                    written += 1
        else:
            batch = [ready(row) for row in rows]
            cursor.executemany(statement, batch)
            written = len(batch)
    return written


def new_ids(session: Session, table: sa.Table, count: int) -> list[int]:
    """Ids for ``count`` new rows, chosen before the rows are written.

    The fast insert paths (COPY, a plain executemany) return nothing, and INSERT … RETURNING
    over thousands of rows cost more than half of a pull's storing time. PostgreSQL draws the
    ids from the table's sequence. SQLite continues from max(id), as its own rowid choice would:
    every hub transaction on SQLite begins IMMEDIATE (hub.db), so no other writer can take those
    ids meanwhile. Rows that refer to one another (a revision to its record) can so be written
    in bulk, each table once.
    """
    if session.get_bind().dialect.name == "postgresql":
        return list(session.execute(
            sa.text("SELECT nextval(pg_get_serial_sequence(:t, 'id')) FROM generate_series(1, :n)"),
            {"t": table.name, "n": count},
        ).scalars())  # fmt: skip
    start = session.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one() + 1
    return list(range(start, start + count))


class MatchingRows:
    """``SELECT columns FROM … WHERE key IN (values) [AND filters]``, built once, run for any number of values.

    PostgreSQL takes the values as one array parameter, one statement per call: as IN lists of
    500 parameters, each statement was a new text for psycopg to parse and for the server to
    plan, and a file-drop page spent more time on its two lookups than on COPYing its rows.
    Each value is looked up on its own (``unnest(:values)`` joined LATERAL to a subquery that
    OFFSET 0 keeps from being flattened), so the plan is one index probe per value whatever the
    table's statistics say. As ``key = ANY(:values)`` the plan hung on them: a table that had
    grown since its last ANALYZE looked small, and for the violations' lookup PostgreSQL read
    every record of the agency through the first column of the (agency, record id) index and
    filtered them: 0.4-0.6 s per page at 475,000 records, against 8 ms probing.
    SQLite, which has no arrays, is given IN lists of 500; its planner takes the index.
    """

    def __init__(self, columns: Sequence[sa.ColumnElement], key: sa.Column, *filters: sa.ColumnElement) -> None:
        values = sa.bindparam("values", type_=postgresql.ARRAY(key.type))
        wanted = sa.func.unnest(values).table_valued("value").render_derived(name="wanted")
        found = (sa.select(*columns).where(key == wanted.c.value, *filters)
                 .offset(sa.literal_column("0")).lateral("found"))  # fmt: skip
        self._probes = sa.select(*found.c).select_from(wanted).join(found, sa.true())
        self._in = sa.select(*columns).where(*filters).where(key.in_(sa.bindparam("values", expanding=True)))

    def all(self, session: Session, values: Sequence, **params) -> list[sa.Row]:
        """The matching rows, in no particular order; ``params`` fill the filters' bind parameters."""
        values = list(dict.fromkeys(values))  # a value twice would be probed, and its rows returned, twice
        if not values:
            return []
        # through the session, as the ORM selects these replace were: what it holds unflushed goes first
        if session.get_bind().dialect.name == "postgresql":
            return session.execute(self._probes, {"values": values, **params}).all()
        found: list[sa.Row] = []  # .all(): iterating a result fetches row by row
        for start in range(0, len(values), _IN_CHUNK):
            found.extend(session.execute(self._in, {"values": values[start : start + _IN_CHUNK], **params}).all())
        return found
