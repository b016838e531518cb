"""Records the contract refused, kept with every reason and the exact raw payload, until resolved.

A row is open until one of three things releases it (``released_at`` and ``release_note`` set):

- a record of the same identity is stored (``release_superseded``, called by the hub functions
  that store licences and penalties): the agency or the approval system sent a corrected one;
- ``retry``: the raw payload run again through the *current* agency mapping and contract (after
  the mapping in contracts/agencies/ was fixed), stored as a pull, a submission or an import
  stores it. A pull's cursor has moved past the record, so this is the only way it comes back;
- ``dismiss``: an operator resolved it out of band, with the reason kept.

A record refused again while its row is open (the same file imported twice, a regulator posting
the same bad record) refreshes that row's reasons instead of adding a second one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from contracts.registry import AgencySpec
from hub import audit
from hub.bulk import MatchingRows
from hub.clock import utcnow
from hub.errors import ContractViolation, HubError, Problem, RefusedInput
from hub.models import QuarantinedRecord

__all__ = ["QuarantineDetail", "QuarantineEntry", "RetryOutcome", "SOURCES", "dismiss", "get_entry", "licence_key",
           "list_entries", "open_ids", "quarantine", "release_superseded", "retry", "violation_key"]  # fmt: skip

SOURCES = ("intake", "pull", "api", "filedrop")
KEY_LENGTH = 300  # QuarantinedRecord.record_key
_UNSET: Any = object()
_OPEN = QuarantinedRecord.released_at.is_(None)  # hub.models.QUARANTINE_OPEN_SQL: the partial indexes' predicate


# --- identity ------------------------------------------------------------------------------
def licence_key(decision_no: Any) -> str | None:
    """The key of a licence (its decision number), as its audit subject names it."""
    text = decision_no.strip() if isinstance(decision_no, str) else ""
    return _fitting(f"licence:{text}") if text else None


def violation_key(agency: str | None, record_id: Any) -> str | None:
    """The key of a penalty record: the agency's own record id within that agency."""
    text = str(record_id).strip() if record_id is not None else ""
    return _fitting(f"violation:{agency}:{text}") if agency and text else None


def _fitting(key: str) -> str | None:
    return key if len(key) <= KEY_LENGTH else None  # too long to be any stored record's id: nothing supersedes it


# --- writing -------------------------------------------------------------------------------
def quarantine(session: Session, *, source: str, record_ref: str, problems: Iterable[Problem], raw: str,
               agency_code: str | None = None, record_key: str | None = _UNSET) -> QuarantinedRecord:  # fmt: skip
    """Keep a refused record in the caller's transaction; nothing about it is lost.

    Args:
        record_key: what a stored record would supersede it by (``licence_key``/``violation_key``).
            By default, for an agency's record, its ref: pulls and submissions name a record by
            the agency's record id when it has one (a made-up ref, "item 3", matches no record).
    """
    if record_key is _UNSET:
        record_key = violation_key(agency_code, record_ref)
    reasons = [{"field": p.field, "reason": p.reason} for p in problems]
    digest = hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest() if raw else None
    row = None
    if digest is not None:  # an empty raw (a whole batch refused) says nothing about which record it was
        column = QuarantinedRecord.agency_code
        same_agency = (column == agency_code) if agency_code else column.is_(None)
        row = session.exec(select(QuarantinedRecord).where(QuarantinedRecord.raw_digest == digest, _OPEN,
                                                           QuarantinedRecord.source == source, same_agency)
                           .limit(1)).first()  # fmt: skip
    if row is None:
        row = QuarantinedRecord(source=source, agency_code=agency_code, raw=raw, raw_digest=digest, reasons=[],
                                record_ref="")  # fmt: skip
    # created_at stays: a row's age counts from the first time the record was refused
    row.record_ref, row.record_key, row.reasons = record_ref[:500], record_key, reasons
    session.add(row)
    return row


_TABLE = QuarantinedRecord.__table__
# every pull page and import asks, and almost always finds nothing: one probe per key of the
# partial index of open rows (for 1,000 keys on PostgreSQL: ~4 ms; as UPDATE … IN lists of 500, ~18 ms)
_OPEN_BY_KEY = MatchingRows((_TABLE.c.id,), _TABLE.c.record_key, _TABLE.c.released_at.is_(None))


def release_superseded(session: Session, keys: Iterable[str | None]) -> int:
    """Release the open rows of records just stored (a corrected licence or penalty supersedes its
    refused version), in the caller's transaction; how many."""
    ids = [row.id for row in _OPEN_BY_KEY.all(session, [k for k in keys if k])]
    if ids:
        session.execute(_TABLE.update().where(_TABLE.c.id.in_(ids))
                        .values(released_at=utcnow(), release_note="superseded: a record of the same identity was stored"))  # fmt: skip
    return len(ids)


def dismiss(session: Session, ids: Sequence[int], *, reason: str, actor: str) -> list[int]:
    """Release open rows an operator resolved out of band, with the reason kept; all or none.

    Raises:
        RefusedInput: an id is unknown or already released (named); nothing was written.
    """
    ids, reason = list(dict.fromkeys(ids)), reason.strip()
    if not reason:
        raise RefusedInput("--reason: say how the records were resolved")
    if len(reason) > 400:
        raise RefusedInput(f"--reason: {len(reason)} characters; at most 400 are kept")
    rows = {r.id: r for r in session.exec(select(QuarantinedRecord).where(QuarantinedRecord.id.in_(ids))
                                          .with_for_update()).all()}  # fmt: skip
    for qid in ids:
        if qid not in rows:
            raise RefusedInput(f"quarantine {qid}: no such record")
        if rows[qid].released_at is not None:
            raise RefusedInput(f"quarantine {qid}: released already ({rows[qid].release_note})")
    now = utcnow()
    for qid in ids:
        rows[qid].released_at, rows[qid].release_note = now, f"dismissed by {actor}: {reason}"[:500]
        session.add(rows[qid])
    audit.append(session, actor=actor, action="quarantine.dismiss", subject="quarantine",
                 detail={"ids": list(ids), "reason": reason,
                         "refs": [[rows[q].source, rows[q].agency_code, rows[q].record_ref] for q in ids]})  # fmt: skip
    return list(ids)


# --- reading -------------------------------------------------------------------------------
class QuarantineEntry(BaseModel):
    """One quarantined record as listed: every reason, without the raw payload."""

    id: int
    source: str
    agency: str | None
    record_ref: str
    record_key: str | None
    reasons: list[dict[str, str]]
    created_at: dt.datetime
    age_seconds: float
    released_at: dt.datetime | None
    release_note: str | None


class QuarantineDetail(QuarantineEntry):
    """One quarantined record in full, with the raw payload exactly as it arrived."""

    raw: str


def _entry(row: QuarantinedRecord, now: dt.datetime, model: type[QuarantineEntry] = QuarantineEntry) -> Any:
    extra = {"raw": row.raw} if model is QuarantineDetail else {}
    return model(id=row.id, source=row.source, agency=row.agency_code, record_ref=row.record_ref,
                 record_key=row.record_key, reasons=row.reasons, created_at=row.created_at,
                 age_seconds=max((now - row.created_at).total_seconds(), 0.0), released_at=row.released_at,
                 release_note=row.release_note, **extra)  # fmt: skip


def _filtered(query, *, agency: str | None, source: str | None, include_released: bool):
    if agency:
        query = query.where(QuarantinedRecord.agency_code == agency.upper())
    if source:
        if source not in SOURCES:
            raise RefusedInput(f"source {source!r} is not one of {', '.join(SOURCES)}")
        query = query.where(QuarantinedRecord.source == source)
    return query if include_released else query.where(_OPEN)


def list_entries(session: Session, *, agency: str | None = None, source: str | None = None,
                 include_released: bool = False, limit: int | None = None,
                 offset: int = 0) -> tuple[int, list[QuarantineEntry]]:  # fmt: skip
    """(how many match, the page of them), newest first; open rows only unless ``include_released``."""
    where = dict(agency=agency, source=source, include_released=include_released)
    total = session.exec(_filtered(select(sa.func.count()).select_from(QuarantinedRecord), **where)).one()
    query = _filtered(select(QuarantinedRecord), **where).order_by(QuarantinedRecord.id.desc()).offset(offset)
    rows = session.exec(query.limit(limit) if limit is not None else query).all()
    now = utcnow()
    return total, [_entry(r, now) for r in rows]


def get_entry(session: Session, qid: int) -> QuarantineDetail | None:
    row = session.get(QuarantinedRecord, qid)
    return None if row is None else _entry(row, utcnow(), QuarantineDetail)


def open_ids(session: Session, *, agency: str | None = None) -> list[int]:
    """Open rows' ids, oldest first (the order they are retried in)."""
    query = _filtered(select(QuarantinedRecord.id), agency=agency, source=None, include_released=False)
    return list(session.exec(query.order_by(QuarantinedRecord.id)).all())


# --- retry ---------------------------------------------------------------------------------
class RetryOutcome(BaseModel):
    """What a retry did with one row: stored (and released), refused again (new reasons), or left."""

    id: int
    record_ref: str
    result: Literal["stored", "refused", "skipped", "error"]
    detail: str
    reasons: list[dict[str, str]] = []


def retry(engine: Engine, ids: Sequence[int], agencies: Mapping[str, AgencySpec], *,
          actor: str) -> list[RetryOutcome]:  # fmt: skip
    """Run each row's raw record through the current mapping and contract, each in its own transaction.

    Stored as its source stores it (penalties through hub.violations.store_violations, licences
    through hub.licences.record_grants) and released in the same transaction; refused again, the
    row keeps open with the new reasons. Either way the audit log says so (``quarantine.retry``).
    """
    from hub.db import session_scope

    outcomes = []
    for qid in ids:
        try:
            with session_scope(engine) as session:
                outcomes.append(_retry_one(session, qid, agencies, actor))
        except HubError as exc:  # this record's transaction is rolled back; the others go on
            outcomes.append(RetryOutcome(id=qid, record_ref="", result="error", detail=exc.describe()))
    return outcomes


def _retry_one(session: Session, qid: int, agencies: Mapping[str, AgencySpec], actor: str) -> RetryOutcome:
    row = session.exec(select(QuarantinedRecord).where(QuarantinedRecord.id == qid).with_for_update()).first()
    if row is None:
        return RetryOutcome(id=qid, record_ref="", result="skipped", detail="no such quarantined record")
    if row.released_at is not None:
        return RetryOutcome(id=qid, record_ref=row.record_ref, result="skipped",
                            detail=f"released already: {row.release_note or row.released_at}")  # fmt: skip
    if not row.raw:
        return RetryOutcome(id=qid, record_ref=row.record_ref, result="skipped",
                            detail="no raw record kept (a whole batch was refused): have the agency send the "
                                   "batch again, then dismiss this")  # fmt: skip
    try:
        detail, refs = _store_intake(session, row, agencies, actor) if row.source == "intake" \
            else _store_penalty(session, row, agencies, actor)  # fmt: skip
    except ContractViolation as exc:
        row.reasons = [{"field": p.field, "reason": p.reason} for p in exc.problems]
        session.add(row)
        _audit(session, row, actor, "refused", refs=[])
        return RetryOutcome(id=qid, record_ref=row.record_ref, result="refused", reasons=row.reasons,
                            detail=f"refused again: {len(row.reasons)} problem(s)")  # fmt: skip
    # set after the store: its own release of rows it supersedes (this one among them) is less specific
    row.released_at, row.release_note = utcnow(), f"retried by {actor}: {detail}"[:500]
    session.add(row)
    _audit(session, row, actor, detail, refs=refs)
    return RetryOutcome(id=qid, record_ref=row.record_ref, result="stored", detail=detail)


def _audit(session: Session, row: QuarantinedRecord, actor: str, outcome: str, *, refs: list[str]) -> None:
    audit.append(session, actor=actor, action="quarantine.retry", subject=f"quarantine:{row.id}",
                 detail={"id": row.id, "source": row.source, "agency": row.agency_code, "ref": row.record_ref,
                         "outcome": outcome, "refs": refs, "reasons": row.reasons},
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
    (outcome,) = store_violations(session, [record])
    return f"{outcome.value} {spec.code} record {record.agency_record_id}", [record.agency_record_id]


def _resubmit(session: Session, row: QuarantinedRecord, spec: AgencySpec, data: dict,
              actor: str) -> tuple[str, list[str]]:  # fmt: skip
    """A regulator's record submitted again as the API submits it (its audit entry carries the
    record into evidence bundles as the first submission's would have)."""
    from hub.submissions import submit_violations

    native = not any(str(key).startswith("CF_") for key in data)  # canonical records are keyed by CF_ codes
    savepoint = session.begin_nested()
    (outcome,) = submit_violations(session, spec=spec, records=[data], actor=actor, native=native).records
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

    valid, invalid = validate_grants([reread(row.raw, row.record_ref)])
    if invalid:
        raise ContractViolation.of(invalid[0][1])
    (_, grant), = valid
    result = record_grants(session, [grant], agencies, actor=actor, skip_refused=True)
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
