"""the cursor row counts a file batch's quarantined records while the batch is part-way through

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 23:05:00

A file batch is loaded a page per transaction and recorded (inbound_batches) with its last
page. Its quarantined count was summed in the pulling process, so a pull that resumed a batch
another process had started counted only its own pages. Kept on the cursor row, committed with
each page like the token, the count covers every page whoever committed it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sync_cursors") as batch_op:
        batch_op.add_column(sa.Column("batch_quarantined", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("sync_cursors") as batch_op:
        batch_op.drop_column("batch_quarantined")
