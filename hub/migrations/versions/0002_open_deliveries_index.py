"""partial index of open deliveries, for the push's claim

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:30:00

The claim query (hub.push._DUE) takes an agency's oldest open deliveries in id order. With
only the primary key to walk, the database skipped every delivered row on each batch, so a push
slowed down as the outbox's history grew.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

OPEN_STATES_SQL = "state IN ('pending', 'sending', 'waiting_retry')"  # as in hub.models, frozen here


def upgrade() -> None:
    op.create_index("ix_deliveries_open", "deliveries", ["agency_code", "id"], unique=False,
                    sqlite_where=sa.text(OPEN_STATES_SQL), postgresql_where=sa.text(OPEN_STATES_SQL))


def downgrade() -> None:
    op.drop_index("ix_deliveries_open", table_name="deliveries")
