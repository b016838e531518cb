"""Storing penalty records: one row per (source agency, agency record id), with its history.

A record seen again with the same content changes nothing; with new content (a corrected
amount, a repair) it updates the row and appends a revision, so nothing is duplicated and
nothing is forgotten.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session, select

from adapters.base import canonical_json, payload_digest
from contracts.records import ViolationRecord
from hub.clock import utcnow
from contracts.uscc import PLACEHOLDER
from hub.bulk import MatchingRows, bulk_insert, new_ids
from hub.companies import company_ids_by_uscc, resolve_identity
from hub.models import IdentityStatus, Violation, ViolationRevision
from hub.quarantine import release_superseded, violation_key

__all__ = ["StoreOutcome", "store_violation", "store_violations", "take_agency_turns"]


class StoreOutcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def _columns(record: ViolationRecord, digest: str) -> dict:
    """The violation row's columns that come from the record itself (one place for both store paths)."""
    return {
        "subject_name": record.subject_name, "uscc": record.uscc, "decision_no": record.decision_no,
        "decision_date": record.decision_date, "severity": record.severity.value,
        "penalty_types": [p.value for p in record.penalty_types], "fine": record.fine,
        "confiscated": record.confiscated, "validity_end": record.validity_end,
        "publication_end": record.publication_end, "repair_status": record.repair_status.value,
        "repair_date": record.repair_date, "digest": digest,
    }  # fmt: skip


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
    if row is not None and _same_in_todays_form(row.payload, digest):
        # stored by an earlier hub in another form of the same content (an amount "0.20", now "0.2"):
        # the stored form becomes today's, so that the next pull finds it by digest, and no revision is added
        row.payload, row.digest = canonical, digest
        session.add(row)
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
    for name, value in _columns(record, digest).items():
        setattr(row, name, value)
    row.payload, row.updated_at = canonical, utcnow()
    row.company_id, row.identity_status, row.identity_note = identity.company_id, identity.status, identity.note
    row.version += 1
    session.add(row)
    session.flush()
    session.add(ViolationRevision(violation_id=row.id, version=row.version, digest=digest, payload=canonical))
    return outcome, row


def _same_in_todays_form(stored: dict, digest: str) -> bool:
    """True when the stored payload, read by today's contract, is the record whose digest is ``digest``."""
    try:
        today = ViolationRecord.model_validate(stored)
    except ValueError:  # pydantic's ValidationError is one: the stored record breaks a rule added since
        return False
    return payload_digest(today.model_dump(mode="json", by_alias=True, exclude_none=True)) == digest


_VIOLATION_COLUMNS = (
    "id", "source_agency", "agency_record_id", "company_id", "identity_status", "identity_note", "subject_name",
    "uscc", "decision_no", "decision_date", "severity", "penalty_types", "fine", "confiscated", "validity_end",
    "publication_end", "repair_status", "repair_date", "version", "digest", "payload", "created_at", "updated_at",
)  # fmt: skip
_REVISION_COLUMNS = ("violation_id", "version", "digest", "payload", "recorded_at")


_table = Violation.__table__
_DIGESTS = MatchingRows((_table.c.agency_record_id, _table.c.digest), _table.c.agency_record_id,
                        _table.c.source_agency == sa.bindparam("agency"))  # fmt: skip


def _existing_digests(session: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    by_agency: dict[str, list[str]] = {}
    for agency, record_id in keys:
        by_agency.setdefault(agency, []).append(record_id)
    found: dict[tuple[str, str], str] = {}
    for agency, ids in by_agency.items():
        found.update({(agency, rid): digest for rid, digest in _DIGESTS.all(session, ids, agency=agency)})
    return found


def store_violations(session: Session, records: Sequence[ViolationRecord], *,
                     before: dt.datetime | None = None) -> list[StoreOutcome]:  # fmt: skip
    """Store a page of records in the caller's transaction; same outcomes as store_violation, one by one.

    Row-at-a-time ORM work dominated pulls (see docs/benchmarks.md), so new records are found
    with one IN query, their companies resolved with another, and inserted with one executemany
    each for violations and revisions. Changed records, a record id repeated within the page and
    records identified only by a legacy id take store_violation's path, in page order after the
    new ones, so the result is what calling store_violation for each record in turn gives, with
    one difference: a record known only by a legacy id is linked to a company that a later
    record of the same page brought in by USCC (one by one, it would be stored unlinked).

    ``before``: the open quarantine rows a stored record releases are those refused before it (see
    hub.quarantine.release_superseded): the moment the caller's batch began, taken before it
    quarantined any of the batch; by default, now.
    """
    before = before or utcnow()
    take_agency_turns(session, {record.source_agency for record in records})
    prepared, texts = [], []
    for record in records:
        canonical = record.model_dump(mode="json", by_alias=True, exclude_none=True)
        text = canonical_json(canonical)  # serialised once: for the digest and for both payload columns
        prepared.append((record, canonical, hashlib.sha256(text.encode("utf-8")).hexdigest()))
        texts.append(text)
    existing = _existing_digests(session, {(r.source_agency, r.agency_record_id) for r, _, _ in prepared})
    outcomes: list[StoreOutcome | None] = [None] * len(prepared)
    fresh, slow, seen = [], [], set()
    for index, (record, canonical, digest) in enumerate(prepared):
        key = (record.source_agency, record.agency_record_id)
        by_uscc = bool(record.uscc and record.uscc != PLACEHOLDER)
        if key in seen or (key not in existing and not by_uscc):
            slow.append(index)
        elif key in existing:
            if existing[key] == digest:
                outcomes[index] = StoreOutcome.UNCHANGED
            else:
                slow.append(index)
        else:
            fresh.append(index)
        seen.add(key)
    if fresh:
        _insert_fresh(session, [prepared[i] for i in fresh], [texts[i] for i in fresh])
        for i in fresh:
            outcomes[i] = StoreOutcome.CREATED
    for i in slow:
        outcomes[i], _ = store_violation(session, prepared[i][0])
    # a record stored anew supersedes its refused version; an unchanged one was stored before, so a
    # resync (every record unchanged) costs no query
    stored = (record for (record, _, _), outcome in zip(prepared, outcomes) if outcome is not StoreOutcome.UNCHANGED)
    release_superseded(session, [violation_key(r.source_agency, r.agency_record_id) for r in stored], before=before)
    return outcomes  # type: ignore[return-value]


#: 'SHVI', and the agency's code: the two-key form, a lock space apart from hub.audit's and hub.licences' keys
_AGENCY_WRITERS_LOCK = sa.select(sa.func.pg_advisory_xact_lock(sa.literal(0x5348_5649, sa.Integer),
                                                               sa.func.hashtext(sa.bindparam("agency"))))  # fmt: skip


def take_agency_turns(session: Session, agencies: set[str]) -> None:
    """PostgreSQL: writers of one agency's records take turns until their transactions end.

    A regulator resending a batch still in flight, or posting while the agency's pull stores a
    page, found the same record new in both transactions; the second then failed on the unique
    (agency, record id) key, a 500 for a record that was merely unchanged. Waiting its turn, it
    reads the first one's rows. On SQLite, BEGIN IMMEDIATE already serialises every writer.

    Taken first, before any quarantine row is written: a quarantine retry holds this lock and then
    releases its row, so a writer holding that row while waiting for this lock would deadlock it.
    Taken again in the same transaction, it is simply held.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    connection = session.connection()
    for agency in sorted(agencies):  # always in the same order: two writers never wait on each other
        connection.execute(_AGENCY_WRITERS_LOCK, {"agency": agency})


def _insert_fresh(session: Session, prepared: list[tuple[ViolationRecord, dict, str]], texts: list[str]) -> None:
    """Insert records not stored before, each with its first revision, through hub.bulk."""
    companies = company_ids_by_uscc(session, [record for record, _, _ in prepared])
    ids = new_ids(session, Violation.__table__, len(prepared))
    now, linked = utcnow(), IdentityStatus.LINKED.value
    rows, revisions = [], []
    for vid, (r, _, digest), text in zip(ids, prepared, texts, strict=True):
        revisions.append((vid, 1, digest, text, now))
        rows.append((
            vid, r.source_agency, r.agency_record_id, companies[r.uscc], linked, None, r.subject_name, r.uscc,
            r.decision_no, r.decision_date, r.severity.value, json.dumps([p.value for p in r.penalty_types]), r.fine,
            r.confiscated, r.validity_end, r.publication_end, r.repair_status.value, r.repair_date, 1, digest, text,
            now, now,
        ))  # fmt: skip
    bulk_insert(session, Violation.__table__, _VIOLATION_COLUMNS, rows)
    bulk_insert(session, ViolationRevision.__table__, _REVISION_COLUMNS, revisions)
