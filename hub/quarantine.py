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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from contracts.registry import AgencySpec
from hub import audit
from hub.bulk import MatchingRows
from hub.clock import utcnow
from hub.errors import HubError, Problem, RefusedInput
from hub.models import QuarantinedRecord

__all__ = ["QuarantineDetail", "QuarantineEntry", "Refusal", "RetryOutcome", "SOURCES", "dismiss", "get_entry",
           "licence_key", "list_entries", "open_ids", "quarantine", "quarantine_many", "release_superseded", "retry",
           "violation_key"]  # fmt: skip

SOURCES = ("intake", "pull", "api")
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
_TABLE = QuarantinedRecord.__table__
_OPEN_SQL = _TABLE.c.released_at.is_(None)
# a refused batch (a page of 1,000 after an agency's dialect change) asks once for all its digests,
# not once per record; the partial index of open rows by digest answers it
_OPEN_BY_DIGEST = MatchingRows((_TABLE.c.id, _TABLE.c.raw_digest), _TABLE.c.raw_digest, _OPEN_SQL,
                               _TABLE.c.source == sa.bindparam("source"),
                               _TABLE.c.agency_code == sa.bindparam("agency"))  # fmt: skip
_OPEN_BY_DIGEST_NO_AGENCY = MatchingRows((_TABLE.c.id, _TABLE.c.raw_digest), _TABLE.c.raw_digest, _OPEN_SQL,
                                         _TABLE.c.source == sa.bindparam("source"), _TABLE.c.agency_code.is_(None))  # fmt: skip


@dataclass(frozen=True)
class Refusal:
    """One refused record of a batch: how it is named, every reason, and its raw payload as it arrived.

    ``record_key`` is what a stored record would supersede it by (``licence_key``/``violation_key``);
    by default, for an agency's record, its ref: pulls and submissions name a record by the agency's
    record id when it has one (a made-up ref, "item 3", matches no record).
    """

    record_ref: str
    problems: Sequence[Problem]
    raw: str
    record_key: str | None = _UNSET


def _digest(raw: str) -> str | None:
    # an empty raw (a whole batch refused) says nothing about which record it was: never one row with another
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest() if raw else None


def quarantine_many(session: Session, refusals: Sequence[Refusal], *, source: str, agency_code: str | None,
                    raw_format: str | None) -> list[QuarantinedRecord]:  # fmt: skip
    """Keep a batch's refused records in the caller's transaction; nothing about them is lost.

    A record whose raw payload is already open (the same file imported twice, a regulator posting
    the same bad record, or the same record twice in this batch) refreshes that row's reasons
    instead of adding another. The open rows are looked up with one query for the whole batch.

    Args:
        refusals: the batch's refused records, in batch order.
        source: intake, pull or api.
        agency_code: the agency the records came from (None: the approval system's licences).
        raw_format: how ``retry`` reads the raw record again: csv, jsonl, canonical or native.

    Returns:
        Each refusal's row, in order: two identical refusals share one.
    """
    digests = [_digest(r.raw) for r in refusals]
    lookup = _OPEN_BY_DIGEST if agency_code else _OPEN_BY_DIGEST_NO_AGENCY
    found = {digest: rid for rid, digest in lookup.all(session, [d for d in digests if d], source=source,
                                                       agency=agency_code)}  # fmt: skip
    loaded = {}
    if found:
        ids = sorted(set(found.values()))
        for at in range(0, len(ids), 500):
            query = select(QuarantinedRecord).where(QuarantinedRecord.id.in_(ids[at : at + 500]))
            loaded.update({row.id: row for row in session.exec(query).all()})
    by_digest = {digest: loaded[rid] for digest, rid in found.items() if rid in loaded}
    rows = []
    for refusal, digest in zip(refusals, digests, strict=True):
        row = by_digest.get(digest) if digest is not None else None
        if row is None:
            row = QuarantinedRecord(source=source, agency_code=agency_code, raw=refusal.raw, raw_digest=digest,
                                    reasons=[], record_ref="")  # fmt: skip
            if digest is not None:
                by_digest[digest] = row  # the same record again later in this batch: this row
        # created_at stays: a row's age counts from the first time the record was refused
        key = violation_key(agency_code, refusal.record_ref) if refusal.record_key is _UNSET else refusal.record_key
        row.record_ref, row.record_key = refusal.record_ref[:500], key
        row.reasons = [{"field": p.field, "reason": p.reason} for p in refusal.problems]
        row.raw_format = raw_format
        session.add(row)
        rows.append(row)
    return rows


def quarantine(session: Session, *, source: str, record_ref: str, problems: Iterable[Problem], raw: str,
               agency_code: str | None = None, record_key: str | None = _UNSET,
               raw_format: str | None = None) -> QuarantinedRecord:  # fmt: skip
    """Keep one refused record in the caller's transaction (``quarantine_many`` for a batch)."""
    refusal = Refusal(record_ref, list(problems), raw, record_key)
    (row,) = quarantine_many(session, [refusal], source=source, agency_code=agency_code, raw_format=raw_format)
    return row


# every pull page and import asks, and almost always finds nothing: one probe per key of the
# partial index of open rows (for 1,000 keys on PostgreSQL: ~4 ms; as UPDATE … IN lists of 500, ~18 ms)
_OPEN_BY_KEY = MatchingRows((_TABLE.c.id,), _TABLE.c.record_key, _OPEN_SQL,
                            _TABLE.c.created_at < sa.bindparam("before", type_=_TABLE.c.created_at.type))  # fmt: skip


def release_superseded(session: Session, keys: Iterable[str | None], *, before: dt.datetime) -> int:
    """Release the open rows of records just stored (a corrected licence or penalty supersedes its
    refused version), in the caller's transaction; how many.

    Args:
        before: only rows refused before this supersede: the moment the storing batch began (a
            record refused later in the same batch, or after it, is a newer version than the one
            stored), or for a retried row, when that row was refused.
    """
    ids = [row.id for row in _OPEN_BY_KEY.all(session, [k for k in keys if k], before=before)]
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
    A record whose transaction fails (a database error, a lock not granted) is reported as an
    error, rolled back alone, and the next id is tried (hub.quarantine_retry).
    """
    from hub.db import session_scope
    from hub.quarantine_retry import Skipped, retry_one

    outcomes = []
    for qid in ids:
        try:
            with session_scope(engine) as session:
                outcomes.append(retry_one(session, qid, agencies, actor))
        except Skipped as skip:  # released meanwhile, or stale: this record's transaction is rolled back
            outcomes.append(skip.outcome)
        except HubError as exc:  # this record's transaction is rolled back; the others go on
            outcomes.append(RetryOutcome(id=qid, record_ref="", result="error", detail=exc.describe()))
        except sa.exc.SQLAlchemyError as exc:  # a deadlock, a lock timeout, a lost connection: this one only
            cause = getattr(exc, "orig", None) or exc
            first = (str(cause).strip().splitlines() or [""])[0]
            outcomes.append(RetryOutcome(id=qid, record_ref="", result="error",
                                         detail=f"database error, nothing written: {type(cause).__name__}: {first}"))  # fmt: skip
    return outcomes
