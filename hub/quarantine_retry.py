"""One quarantined record retried: its raw payload run through the current mapping and contract, then stored.

The lock order is the store's: the writers' lock of the record's kind first (the agency's turn in
hub.violations, the licence writers' lock in hub.licences), taken by the store itself, then the
quarantine row, released last with a guarded UPDATE (``… WHERE id = :id AND released_at IS NULL``).
A pull, a submission or an import holds the same writers' lock while its release_superseded
updates open rows, so the two wait on each other in the same order and never deadlock. If the
guarded UPDATE matches nothing, someone released the row meanwhile (another operator's retry, a
superseding record, a dismissal): this record's transaction is rolled back and reported skipped.

A retry never writes an older version over a newer one:

- a row whose record was stored or updated after the row was refused is skipped (the stored
  record is newer; the operator dismisses the row);
- a row with a later refused version of the same record still open is skipped: that later one
  is the one to retry, and storing it releases this row (it was refused before);
- what the store releases as superseded is only rows refused before this one (``before``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping

import sqlalchemy as sa
from sqlmodel import Session, select

from contracts.registry import AgencySpec
from hub import audit
from hub.clock import utcnow
from hub.errors import ContractViolation, Problem
from hub.models import Licence, QuarantinedRecord, Violation
from hub.quarantine import RetryOutcome

__all__ = ["Skipped", "retry_one"]

_TABLE = QuarantinedRecord.__table__


class Skipped(Exception):
    """Not retried after all: the caller rolls this record's transaction back and reports ``outcome``."""

    def __init__(self, outcome: RetryOutcome) -> None:
        super().__init__(outcome.detail)
        self.outcome = outcome


def _skipped(row: QuarantinedRecord, detail: str) -> Skipped:
    return Skipped(RetryOutcome(id=row.id, record_ref=row.record_ref, result="skipped", detail=detail))


def retry_one(session: Session, qid: int, agencies: Mapping[str, AgencySpec], actor: str) -> RetryOutcome:
    """Retry row ``qid`` in the caller's transaction.

    Raises:
        Skipped: released meanwhile, or a newer version exists; the caller rolls back.
    """
    row = session.get(QuarantinedRecord, qid)  # no lock here: the store's writers' lock comes first
    if row is None:
        return RetryOutcome(id=qid, record_ref="", result="skipped", detail="no such quarantined record")
    if row.released_at is not None:
        return RetryOutcome(id=qid, record_ref=row.record_ref, result="skipped",
                            detail=f"released already: {row.release_note or row.released_at}")  # fmt: skip
    if not row.raw:
        return RetryOutcome(id=qid, record_ref=row.record_ref, result="skipped",
                            detail="no raw record kept (a whole batch was refused): have the agency send the "
                                   "batch again, then dismiss this")  # fmt: skip
    later = _later_open_row(session, row)
    if later is not None:
        return RetryOutcome(id=qid, record_ref=row.record_ref, result="skipped",
                            detail=f"a later refused version of this record is open (quarantine {later}): retry "
                                   "that one; storing it releases this one")  # fmt: skip
    try:
        detail, refs = _store_intake(session, row, agencies, actor) if row.source == "intake" \
            else _store_penalty(session, row, agencies, actor)  # fmt: skip
    except ContractViolation as exc:
        reasons = [{"field": p.field, "reason": p.reason} for p in exc.problems]
        _claim(session, row, reasons=reasons)
        _audit(session, row, actor, "refused", refs=[], reasons=reasons)
        return RetryOutcome(id=qid, record_ref=row.record_ref, result="refused", reasons=reasons,
                            detail=f"refused again: {len(reasons)} problem(s)")  # fmt: skip
    _claim(session, row, released_at=utcnow(), release_note=f"retried by {actor}: {detail}"[:500])
    _audit(session, row, actor, detail, refs=refs, reasons=row.reasons)
    return RetryOutcome(id=qid, record_ref=row.record_ref, result="stored", detail=detail)


def _claim(session: Session, row: QuarantinedRecord, **values) -> None:
    """Write ``values`` to the row if it is still open; otherwise the whole retry is undone (Skipped)."""
    done = session.execute(_TABLE.update().where(_TABLE.c.id == row.id, _TABLE.c.released_at.is_(None))
                           .values(**values))  # fmt: skip
    if done.rowcount != 1:
        raise _skipped(row, "released meanwhile (another operator's retry or dismissal, or a record that "
                            "superseded it): nothing was written")  # fmt: skip


def _later_open_row(session: Session, row: QuarantinedRecord) -> int | None:
    if not row.record_key:
        return None
    column = QuarantinedRecord.created_at
    return session.exec(select(QuarantinedRecord.id).where(
        QuarantinedRecord.record_key == row.record_key, QuarantinedRecord.released_at.is_(None),
        QuarantinedRecord.id != row.id,
        sa.or_(column > row.created_at, sa.and_(column == row.created_at, QuarantinedRecord.id > row.id)),
    ).order_by(QuarantinedRecord.id.desc()).limit(1)).first()  # fmt: skip


def _refuse_if_stale(row: QuarantinedRecord, stored_at: dt.datetime | None, what: str) -> None:
    """The record was stored or changed after this row was refused (by a hub before 0006, which
    released nothing, or by a superseding record): the stored one is newer, never overwrite it."""
    if stored_at is not None and stored_at > row.created_at:
        raise _skipped(row, f"a newer record was stored at {stored_at:%Y-%m-%d %H:%M:%S} UTC ({what}); "
                            "dismiss this row")  # fmt: skip


def _violation_stored_at(session: Session, agency: str, record_id: str) -> dt.datetime | None:
    return session.exec(select(Violation.updated_at).where(Violation.source_agency == agency,
                                                           Violation.agency_record_id == record_id)).first()  # fmt: skip


def _audit(session: Session, row: QuarantinedRecord, actor: str, outcome: str, *, refs: list[str],
           reasons: list) -> None:  # fmt: skip
    audit.append(session, actor=actor, action="quarantine.retry", subject=f"quarantine:{row.id}",
                 detail={"id": row.id, "source": row.source, "agency": row.agency_code, "ref": row.record_ref,
                         "outcome": outcome, "refs": refs, "reasons": reasons},
                 payload_digest=row.raw_digest)  # fmt: skip


def _store_penalty(session: Session, row: QuarantinedRecord, agencies: Mapping[str, AgencySpec],
                   actor: str) -> tuple[str, list[str]]:  # fmt: skip
    from contracts.mapping import native_to_violation
    from hub.violations import store_violations

    spec = agencies.get(row.agency_code or "")
    if spec is None:
        raise ContractViolation.of([Problem(row.record_ref, "(agency)",
                                            f"agency {row.agency_code} is not in the agency registry")])  # fmt: skip
    data = _json_object(row)
    if row.source == "api":
        return _resubmit(session, row, spec, data, actor)
    native = _soap_native(spec, data) if spec.protocol == "soap" else data
    record = native_to_violation(native, spec.violation_mapping, agency_code=spec.code, record=row.record_ref)
    _refuse_if_stale(row, _violation_stored_at(session, spec.code, record.agency_record_id),
                     f"{spec.code} record {record.agency_record_id}")  # fmt: skip
    (outcome,) = store_violations(session, [record], before=row.created_at)
    return f"{outcome.value} {spec.code} record {record.agency_record_id}", [record.agency_record_id]


def _resubmit(session: Session, row: QuarantinedRecord, spec: AgencySpec, data: dict,
              actor: str) -> tuple[str, list[str]]:  # fmt: skip
    """A regulator's record submitted again as the API submits it (its audit entry carries the
    record into evidence bundles as the first submission's would have)."""
    from contracts.mapping import native_to_violation
    from contracts.records import ViolationRecord
    from contracts.validation import parse_record
    from hub.submissions import submit_violations

    if row.raw_format in ("native", "canonical"):
        native = row.raw_format == "native"
    else:  # a row from before 0006 kept no form: canonical records are mostly keyed by CF_ codes
        native = not any(str(key).startswith("CF_") for key in data)
    # its identity, to check nothing newer is stored; refused here, the submission would refuse it too
    record = native_to_violation(data, spec.violation_mapping, agency_code=spec.code, record=row.record_ref) \
        if native else parse_record(ViolationRecord, {**data, "source_agency": spec.code}, record=row.record_ref)  # fmt: skip
    _refuse_if_stale(row, _violation_stored_at(session, spec.code, record.agency_record_id),
                     f"{spec.code} record {record.agency_record_id}")  # fmt: skip
    savepoint = session.begin_nested()
    (outcome,) = submit_violations(session, spec=spec, records=[data], actor=actor, native=native,
                                   before=row.created_at).records  # fmt: skip
    if outcome.outcome == "quarantined":
        savepoint.rollback()  # its new row and entry: this row keeps the record, with the new reasons
        raise ContractViolation.of([Problem(row.record_ref, p["field"], p["reason"]) for p in outcome.problems])
    savepoint.commit()
    return f"{outcome.outcome} {spec.code} record {outcome.agency_record_id}", [outcome.agency_record_id or ""]


def _soap_native(spec: AgencySpec, item: dict) -> dict:
    """The native record a SOAP pull made of this item (SOAP keeps the item as JSON, not its fields)."""
    from adapters.base import item_fields

    return item_fields(item, spec.transport.get("item_paths") or None)


def _store_intake(session: Session, row: QuarantinedRecord, agencies: Mapping[str, AgencySpec],
                  actor: str) -> tuple[str, list[str]]:  # fmt: skip
    from hub.intake import reread, validate_grants
    from hub.licences import record_grants

    valid, invalid = validate_grants([reread(row.raw, row.record_ref, fmt=row.raw_format)])
    if invalid:
        raise ContractViolation.of(invalid[0][1])
    (_, grant), = valid
    stored_at = session.exec(select(Licence.updated_at).where(Licence.decision_no == grant.decision_no)).first()
    _refuse_if_stale(row, stored_at, f"licence {grant.decision_no}")
    result = record_grants(session, [grant], agencies, actor=actor, skip_refused=True, before=row.created_at)
    if result.refused:
        raise ContractViolation.of([problem for _, problem in result.refused])
    done = "created" if result.created else "changed" if result.changed else "unchanged"
    return f"{done} licence {grant.decision_no}", [grant.decision_no]


def _json_object(row: QuarantinedRecord) -> dict:
    try:
        data = json.loads(row.raw)
    except ValueError as exc:
        raise ContractViolation.of([Problem(row.record_ref, "(record)", f"raw record is not JSON: {exc}")]) from exc
    if not isinstance(data, dict):
        raise ContractViolation.of([Problem(row.record_ref, "(record)", "raw record is not a JSON object")])
    return data
