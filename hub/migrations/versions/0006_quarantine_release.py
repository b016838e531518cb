"""quarantine rows can be released: the key a stored record supersedes them by, the raw digest, the release note, the raw form

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 20:00:00

`hub quarantine retry|dismiss` release rows, and storing a record releases the open rows of the same
licence or agency record (hub.quarantine.release_superseded): that lookup runs once per pull page
and import, so it reads a partial index of open rows by ``record_key``. A record refused again
(the same file imported twice) refreshes its open row, found by ``raw_digest``. Open rows are
given both here, by the rules hub.quarantine applies to new rows (frozen in this file). ``raw_format``
(csv, jsonl, canonical, native) says how retry reads the raw record again; old rows keep it NULL,
and retry guesses their form as it did before.
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OPEN_SQL = "released_at IS NULL"  # as hub.models.QUARANTINE_OPEN_SQL, frozen here
KEY_LENGTH = 300
REPEATS = "repeats record"  # hub.intake: a decision number seen earlier in the file, frozen here


def _key(row) -> str | None:
    if row.agency_code:
        key = f"violation:{row.agency_code}:{row.record_ref.strip()}"
    else:
        try:
            data = json.loads(row.raw)
        except ValueError:
            return None
        number = data.get("XK_WSH") if isinstance(data, dict) else None
        # a record repeating an earlier record's decision number is not a bad version of that licence:
        # as new rows, it gets no key, so that licence's next change does not release it
        if any(isinstance(r, dict) and r.get("field") == "XK_WSH" and str(r.get("reason", "")).startswith(REPEATS)
               for r in _reasons(row.reasons)):  # fmt: skip
            return None
        key = f"licence:{number.strip()}" if isinstance(number, str) and number.strip() else None
    return key if key is not None and len(key) <= KEY_LENGTH else None


def _reasons(value) -> list:
    if isinstance(value, str):  # JSON columns come back as text through a plain table on some drivers
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def _digest(raw: str | None) -> str | None:
    # an empty raw (a whole batch refused) says nothing about which record it was: no digest, as new rows
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest() if raw else None


def upgrade() -> None:
    with op.batch_alter_table("quarantine") as batch_op:
        batch_op.add_column(sa.Column("record_key", sqlmodel.sql.sqltypes.AutoString(length=KEY_LENGTH), nullable=True))
        batch_op.add_column(sa.Column("raw_digest", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("release_note", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
        batch_op.add_column(sa.Column("raw_format", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
    bind = op.get_bind()
    table = sa.table("quarantine", sa.column("id"), sa.column("agency_code"), sa.column("record_ref"),
                     sa.column("raw"), sa.column("reasons"), sa.column("record_key"), sa.column("raw_digest"), sa.column("released_at"))  # fmt: skip
    rows = bind.execute(sa.select(table.c.id, table.c.agency_code, table.c.record_ref, table.c.raw, table.c.reasons)
                        .where(table.c.released_at.is_(None))).all()  # fmt: skip
    for row in rows:
        bind.execute(table.update().where(table.c.id == row.id)
                     .values(record_key=_key(row), raw_digest=_digest(row.raw)))  # fmt: skip
    op.create_index("ix_quarantine_open_key", "quarantine", ["record_key"], unique=False,
                    sqlite_where=sa.text(OPEN_SQL), postgresql_where=sa.text(OPEN_SQL))  # fmt: skip
    op.create_index("ix_quarantine_open_raw", "quarantine", ["raw_digest"], unique=False,
                    sqlite_where=sa.text(OPEN_SQL), postgresql_where=sa.text(OPEN_SQL))  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_quarantine_open_raw", table_name="quarantine")
    op.drop_index("ix_quarantine_open_key", table_name="quarantine")
    with op.batch_alter_table("quarantine") as batch_op:
        batch_op.drop_column("raw_format")
        batch_op.drop_column("release_note")
        batch_op.drop_column("raw_digest")
        batch_op.drop_column("record_key")
