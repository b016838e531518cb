"""Storage tables. Every schema change goes through an Alembic migration (hub/migrations).

Timestamps are aware UTC (hub.clock.utcnow); SQLModel's UTCDateTime returns them as UTC on both databases.
Amounts in 万元 use ExactDecimal: NUMERIC(18,6) on PostgreSQL, text on SQLite, never a float.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from hub.clock import utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING
metadata = SQLModel.metadata


class ExactDecimal(TypeDecorator):
    """Decimal(18,6) that never passes through a float (SQLite has no exact NUMERIC)."""

    impl = sa.Numeric(18, 6)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.String(40))
        return dialect.type_descriptor(sa.Numeric(18, 6))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return f"{Decimal(value):f}" if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value, dialect):
        return None if value is None else Decimal(str(value))


def _json(nullable: bool = False) -> Any:
    return Field(default=None, sa_type=sa.JSON, nullable=nullable)


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    WAITING_RETRY = "waiting_retry"
    DEAD = "dead"
    SUPERSEDED = "superseded"


class IdentityStatus(StrEnum):
    LINKED = "linked"  # attached to exactly one company
    UNKNOWN = "unknown"  # its identifier matches no company we know
    AMBIGUOUS = "ambiguous"  # its legacy identifier matches several companies


# --- companies and licences -------------------------------------------------------------
class Company(SQLModel, table=True):
    """A licensed subject. USCC is the key; legacy ids are kept to link old agency data."""

    __tablename__ = "companies"
    id: int | None = Field(default=None, primary_key=True)
    uscc: str | None = Field(default=None, max_length=18, unique=True)
    name: str = Field(max_length=500, index=True)
    category: str = Field(max_length=20)
    org_code: str | None = Field(default=None, max_length=9, index=True)
    reg_no: str | None = Field(default=None, max_length=15, index=True)
    legal_rep: str | None = Field(default=None, max_length=200)
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class Licence(SQLModel, table=True):
    """The current state of one licence decision; every state it has had is a LicenceRevision."""

    __tablename__ = "licences"
    id: int | None = Field(default=None, primary_key=True)
    decision_no: str = Field(max_length=500, unique=True)
    licence_no: str | None = Field(default=None, max_length=200, index=True)
    company_id: int = Field(foreign_key="companies.id", index=True)
    approval_item: str = Field(max_length=100, index=True)
    bureau_section: str = Field(max_length=200)
    category: str = Field(max_length=10)
    industry: str | None = Field(default=None, max_length=100)
    lifecycle: str = Field(max_length=20)
    decision_date: dt.date
    valid_from: dt.date
    valid_to: dt.date
    version: int = 1
    digest: str = Field(max_length=64)
    payload: dict = _json()
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class LicenceRevision(SQLModel, table=True):
    """Append-only: each grant, change, cancellation or revocation as it was recorded."""

    __tablename__ = "licence_revisions"
    __table_args__ = (sa.UniqueConstraint("licence_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    licence_id: int = Field(foreign_key="licences.id")  # indexed by the unique constraint
    version: int
    lifecycle: str = Field(max_length=20)
    digest: str = Field(max_length=64)
    payload: dict = _json()
    recorded_at: dt.datetime = Field(default_factory=utcnow)


# --- agencies, outbox, pulls ------------------------------------------------------------
class Agency(SQLModel, table=True):
    """An agency or regulator from the registry, with the timestamps the status page needs."""

    __tablename__ = "agencies"
    code: str = Field(primary_key=True, max_length=16)
    name_zh: str = Field(max_length=200)
    name_en: str = Field(max_length=200)
    kind: str = Field(max_length=20)
    protocol: str = Field(max_length=20)
    last_push_at: dt.datetime | None = None
    last_pull_at: dt.datetime | None = None  # last successful pull (freshness is measured from it)
    last_error: str | None = Field(default=None, max_length=2000)
    last_error_at: dt.datetime | None = None


#: Deliveries not yet settled (delivered, dead and superseded ones are), as SQL for the partial index.
OPEN_STATES_SQL = "state IN ('pending', 'sending', 'waiting_retry')"


class Delivery(SQLModel, table=True):
    """One licence revision addressed to one agency: the outbox row and, once acked, its receipt."""

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.UniqueConstraint("revision_id", "agency_code"),
        sa.Index("ix_deliveries_agency_state_due", "agency_code", "state", "next_attempt_at"),
        # The push claims an agency's oldest open deliveries in id order. Without this index the
        # database walks the primary key past every delivered row first, so each batch cost more
        # than the last (quadratic in the outbox's history). Only open rows are in it, so it stays
        # as small as the backlog. Queries must repeat OPEN_STATES_SQL verbatim: SQLite uses a
        # partial index only when the query contains the index's WHERE term exactly.
        sa.Index("ix_deliveries_open", "agency_code", "id", sqlite_where=sa.text(OPEN_STATES_SQL),
                 postgresql_where=sa.text(OPEN_STATES_SQL)),  # fmt: skip
    )
    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=80, unique=True)
    licence_id: int = Field(foreign_key="licences.id", index=True)
    revision_id: int = Field(foreign_key="licence_revisions.id")
    agency_code: str = Field(foreign_key="agencies.code", max_length=16)
    state: str = Field(default=DeliveryState.PENDING, max_length=20)
    attempts: int = 0
    next_attempt_at: dt.datetime = Field(default_factory=utcnow)
    sending_since: dt.datetime | None = None
    last_error: str | None = Field(default=None, max_length=2000)
    sent_digest: str | None = Field(default=None, max_length=64)
    ack_id: str | None = Field(default=None, max_length=200)
    acked_at: dt.datetime | None = None
    receipt_digest: str | None = Field(default=None, max_length=64)
    superseded_by: int | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class SyncCursor(SQLModel, table=True):
    """How far the pull from one agency has got; written in the same transaction as the records."""

    __tablename__ = "sync_cursors"
    agency_code: str = Field(primary_key=True, foreign_key="agencies.code", max_length=16)
    position: int = 0
    token: str | None = Field(default=None, max_length=2000)
    # records quarantined so far in the file batch the token is part-way through (InboundBatch.quarantined)
    batch_quarantined: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    updated_at: dt.datetime = Field(default_factory=utcnow)


class InboundBatch(SQLModel, table=True):
    """A file-drop batch that was loaded; recorded so it is never loaded twice."""

    __tablename__ = "inbound_batches"
    __table_args__ = (sa.UniqueConstraint("agency_code", "batch_id"),)
    id: int | None = Field(default=None, primary_key=True)
    agency_code: str = Field(foreign_key="agencies.code", max_length=16)
    batch_id: str = Field(max_length=200)
    records: int = 0
    quarantined: int = 0
    loaded_at: dt.datetime = Field(default_factory=utcnow)


class SyncLease(SQLModel, table=True):
    """One sync per agency at a time; the fencing token grows with every new holder."""

    __tablename__ = "sync_leases"
    agency_code: str = Field(primary_key=True, max_length=16)
    holder: str | None = Field(default=None, max_length=200)
    fencing_token: int = 0
    expires_at: dt.datetime | None = None


# --- violations -------------------------------------------------------------------------
class Violation(SQLModel, table=True):
    """A penalty record, identified by (source agency, the agency's own record id)."""

    __tablename__ = "violations"
    __table_args__ = (sa.UniqueConstraint("source_agency", "agency_record_id"),)
    id: int | None = Field(default=None, primary_key=True)
    source_agency: str = Field(max_length=16)  # indexed by the unique constraint
    agency_record_id: str = Field(max_length=200)
    company_id: int | None = Field(default=None, foreign_key="companies.id", index=True)
    identity_status: str = Field(default=IdentityStatus.LINKED, max_length=20)
    identity_note: str | None = Field(default=None, max_length=500)
    subject_name: str = Field(max_length=500)
    uscc: str | None = Field(default=None, max_length=18)  # not indexed: read by company_id (migration 0005)
    decision_no: str = Field(max_length=500)
    decision_date: dt.date  # not indexed: read per company, never ranged over (migration 0003)
    severity: str = Field(max_length=20)
    penalty_types: list = _json()
    fine: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    confiscated: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    validity_end: dt.date
    publication_end: dt.date | None = None
    repair_status: str = Field(default="none", max_length=20)
    repair_date: dt.date | None = None
    version: int = 1
    digest: str = Field(max_length=64)
    payload: dict = _json()
    created_at: dt.datetime = Field(default_factory=utcnow)
    updated_at: dt.datetime = Field(default_factory=utcnow)


class ViolationRevision(SQLModel, table=True):
    """Append-only history of a violation record as the agency changed it."""

    __tablename__ = "violation_revisions"
    __table_args__ = (sa.UniqueConstraint("violation_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    violation_id: int = Field(foreign_key="violations.id")  # indexed by the unique constraint
    version: int
    digest: str = Field(max_length=64)
    payload: dict = _json()
    recorded_at: dt.datetime = Field(default_factory=utcnow)


QUARANTINE_OPEN_SQL = "released_at IS NULL"  # the partial indexes' predicate (migration 0006 freezes it)


class QuarantinedRecord(SQLModel, table=True):
    """A record refused by the contract, kept with every reason and its raw payload."""

    __tablename__ = "quarantine"
    __table_args__ = (
        # Storing a record releases the open rows it supersedes (hub.quarantine.release_superseded),
        # once per pull page or import: only open rows are in these, so they stay as small as the backlog.
        # Queries must repeat QUARANTINE_OPEN_SQL verbatim, or SQLite does not use them.
        sa.Index("ix_quarantine_open_key", "record_key", sqlite_where=sa.text(QUARANTINE_OPEN_SQL),
                 postgresql_where=sa.text(QUARANTINE_OPEN_SQL)),
        sa.Index("ix_quarantine_open_raw", "raw_digest", sqlite_where=sa.text(QUARANTINE_OPEN_SQL),
                 postgresql_where=sa.text(QUARANTINE_OPEN_SQL)),
    )  # fmt: skip
    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=20)  # intake | pull | api
    agency_code: str | None = Field(default=None, max_length=16, index=True)
    record_ref: str = Field(max_length=500)
    # the identity a stored record would have (licence:<decision no>, violation:<agency>:<record id>), when readable
    record_key: str | None = Field(default=None, max_length=300)
    raw_digest: str | None = Field(default=None, max_length=64)  # SHA-256 of raw: a record refused again is one row
    reasons: list = _json()
    raw: str = Field(sa_type=sa.Text)
    # how raw is read again on retry: csv | jsonl (an import's file), canonical | native (a submission), native
    # (a pull); NULL for rows from before 0006, whose form retry can only guess
    raw_format: str | None = Field(default=None, max_length=16)
    created_at: dt.datetime = Field(default_factory=utcnow)
    released_at: dt.datetime | None = None
    release_note: str | None = Field(default=None, max_length=500)  # how: retried, superseded, dismissed (why)


# --- evidence ---------------------------------------------------------------------------
class AuditEntry(SQLModel, table=True):
    """Append-only, hash-chained: each entry's hash covers its content and the previous hash."""

    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: dt.datetime = Field(default_factory=utcnow)
    actor: str = Field(max_length=200)
    action: str = Field(max_length=60, index=True)
    subject: str = Field(max_length=500, index=True)
    detail: dict = _json()
    payload_digest: str | None = Field(default=None, max_length=64)
    prev_hash: str = Field(max_length=64)
    entry_hash: str = Field(max_length=64, unique=True)


class ComplianceCheck(SQLModel, table=True):
    """A stored pre-approval verdict, with the inputs it used, as evidence for its approval case."""

    __tablename__ = "compliance_checks"
    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(max_length=200, index=True)
    company_id: int = Field(foreign_key="companies.id", index=True)
    approval_item: str | None = Field(default=None, max_length=100)
    verdict: str = Field(max_length=10)
    reasons: list = _json()
    inputs: dict = _json()
    checked_by: str = Field(max_length=200)
    checked_at: dt.datetime = Field(default_factory=utcnow)
