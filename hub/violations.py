"""Storing penalty records: one row per (source agency, agency record id), with its history.

A record seen again with the same content changes nothing; with new content (a corrected
amount, a repair) it updates the row and appends a revision, so nothing is duplicated and
nothing is forgotten.
"""

from __future__ import annotations

from enum import StrEnum

from sqlmodel import Session, select

from adapters.base import payload_digest
from contracts.records import ViolationRecord
from hub.clock import utcnow
from hub.companies import resolve_identity
from hub.models import Violation, ViolationRevision

__all__ = ["StoreOutcome", "store_violation"]


class StoreOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def _apply(row: Violation, record: ViolationRecord, canonical: dict, digest: str) -> None:
    row.subject_name = record.subject_name
    row.uscc = record.uscc
    row.decision_no = record.decision_no
    row.decision_date = record.decision_date
    row.severity = record.severity.value
    row.penalty_types = [p.value for p in record.penalty_types]
    row.fine, row.confiscated = record.fine, record.confiscated
    row.validity_end, row.publication_end = record.validity_end, record.publication_end
    row.repair_status, row.repair_date = record.repair_status.value, record.repair_date
    row.digest, row.payload, row.updated_at = digest, canonical, utcnow()


def store_violation(session: Session, record: ViolationRecord) -> tuple[StoreOutcome, Violation]:
    """Insert or update one record in the caller's transaction."""
    canonical = record.model_dump(mode="json", by_alias=True, exclude_none=True)
    digest = payload_digest(canonical)
    row = session.exec(
        select(Violation).where(
            Violation.source_agency == record.source_agency,
            Violation.agency_record_id == record.agency_record_id,
        )
    ).first()
    if row is not None and row.digest == digest:
        return StoreOutcome.UNCHANGED, row
    identity = resolve_identity(session, record)
    if row is None:
        row = Violation(source_agency=record.source_agency, agency_record_id=record.agency_record_id,
                        subject_name="", decision_no="", decision_date=record.decision_date, severity="",
                        penalty_types=[], validity_end=record.validity_end, digest="", payload={},
                        version=0)  # fmt: skip
        outcome = StoreOutcome.CREATED
    else:
        outcome = StoreOutcome.UPDATED
    _apply(row, record, canonical, digest)
    row.company_id, row.identity_status, row.identity_note = identity.company_id, identity.status, identity.note
    row.version += 1
    session.add(row)
    session.flush()
    session.add(ViolationRevision(violation_id=row.id, version=row.version, digest=digest, payload=canonical))
    return outcome, row
