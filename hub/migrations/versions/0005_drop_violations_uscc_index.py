"""drop violations.uscc's index: no statement reads violations by USCC

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 02:30:00

A penalty is linked to its company when it is stored (company_id, indexed), and every reader
(history, check, evidence, web page) selects by company_id; USCC lookups go to the companies
table. The index was written for every stored violation, at a random place in the tree since
one company's penalties arrive spread over a feed, and never read.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_violations_uscc", table_name="violations")


def downgrade() -> None:
    op.create_index("ix_violations_uscc", "violations", ["uscc"], unique=False)
