"""drop four indexes no query needs, each one more write per stored record

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 22:50:00

Three are the leading column of a unique constraint that already indexes it:
violations.source_agency (source_agency, agency_record_id), violation_revisions.violation_id
and licence_revisions.licence_id ((…_id, version)). The fourth, violations.decision_date, was
read by no statement: histories select by company and filter dates in the few rows they get.
Every violation a pull stored or changed paid for all four.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

DROPPED = (  # (table, index, column)
    ("violations", "ix_violations_source_agency", "source_agency"),
    ("violations", "ix_violations_decision_date", "decision_date"),
    ("violation_revisions", "ix_violation_revisions_violation_id", "violation_id"),
    ("licence_revisions", "ix_licence_revisions_licence_id", "licence_id"),
)


def upgrade() -> None:
    for table, index, _column in DROPPED:
        op.drop_index(index, table_name=table)


def downgrade() -> None:
    for table, index, column in DROPPED:
        op.create_index(index, table, [column], unique=False)
