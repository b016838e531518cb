"""Violations a regulator submits through the API: the same contract and quarantine as pulled records.

The submitting agency is whoever authenticated: ``source_agency`` in a record is overwritten
with it, so a regulator can only ever report as itself. Records are identified by
(agency, the agency's own record id), so a resubmission updates or changes nothing. A record
that breaks the contract is quarantined with every reason and the rest of the batch goes on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session

from contracts.mapping import native_to_violation, record_id_text
from contracts.records import ViolationRecord
from contracts.registry import AgencySpec
from contracts.validation import parse_record
from hub import audit
from hub.errors import ContractViolation, Problem
from hub.clock import utcnow
from hub.quarantine import Refusal, quarantine_many
from hub.violations import store_violations, take_agency_turns

__all__ = ["RecordOutcome", "SubmissionResult", "submit_violations"]


class RecordOutcome(BaseModel):
    index: int
    agency_record_id: str | None
    outcome: Literal["created", "updated", "unchanged", "quarantined"]
    problems: list[dict[str, str]] = Field(default_factory=list)


class SubmissionResult(BaseModel):
    agency: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    records: list[RecordOutcome] = Field(default_factory=list)


def _readable(text: str) -> str:
    """``text`` with control characters and lone surrogates escaped (\\u0000): a record reference
    holding them could be neither stored (PostgreSQL refuses NUL) nor encoded in the JSON answer."""
    return "".join(f"\\u{ord(ch):04x}" if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in text)


def _raw(data: Any) -> str:
    """The record as submitted, losslessly: JSON-escaped where UTF-8 cannot hold it (lone surrogates)."""
    raw = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
    try:
        raw.encode()
    except UnicodeEncodeError:
        raw = json.dumps(data, ensure_ascii=True, sort_keys=True, default=str)
    return raw


def _lone_surrogate(text: str) -> str:
    """How contracts/fields.py words it, or "" if ``text`` holds no unpaired UTF-16 surrogate."""
    at = next((i for i, ch in enumerate(text) if unicodedata.category(ch) == "Cs"), None)
    return "" if at is None else f"contains an unpaired UTF-16 surrogate U+{ord(text[at]):04X} at character {at + 1}"


def _surrogate_problems(data: Any, ref: str, path: str = "") -> list[Problem]:
    """A problem for every key or string value holding an unpaired UTF-16 surrogate (JSON "\\ud800").

    Such a string is not text: no database stores it and no UTF-8 encoder writes it, so the record
    is refused here, naming the field, whatever the contract says of that field (or of native ones).
    """
    problems: list[Problem] = []
    if isinstance(data, str) and (found := _lone_surrogate(data)):
        problems.append(Problem(ref, path or "(record)", f"{found}, which no text encoding can hold"))
    elif isinstance(data, dict):
        for key, value in data.items():
            field = f"{path}[{_readable(str(key))}]" if path else _readable(str(key))
            if found := _lone_surrogate(str(key)):
                problems.append(Problem(ref, field, f"the field name {found}, which no text encoding can hold"))
            problems += _surrogate_problems(value, ref, field)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            problems += _surrogate_problems(value, ref, f"{path}[{i}]")
    return problems


def _as_id(claimed: Any) -> str:
    """A native id as the mapping reads it (a JSON 7.0 is record "7"), so that a refused record and its
    corrected resend name the same record; as sent when the mapping would refuse it."""
    try:
        return record_id_text(claimed) or str(claimed)
    except ValueError:
        return str(claimed)


def _canonical(data: dict[str, Any], agency: str, ref: str) -> ViolationRecord:
    data = {**data, "source_agency": agency}  # forced: a regulator reports only as itself
    return parse_record(ViolationRecord, data, record=ref)


def submit_violations(session: Session, *, spec: AgencySpec, records: list[dict[str, Any]], actor: str,
                      native: bool = False, before: dt.datetime | None = None) -> SubmissionResult:  # fmt: skip
    """Validate and store a batch from one agency in the caller's transaction.

    Args:
        session: the open transaction.
        spec: the submitting agency (from the caller's credentials, never from the body).
        records: canonical records keyed by CF_ codes, or the agency's native records.
        actor: the authenticated caller, for the audit log.
        native: map each record with the agency's ``violation_mapping`` first, as a pull would.
        before: a stored record releases the open quarantine rows refused before this (by default
            now, before any of this batch is quarantined: a later version refused in the same batch
            stays open).
    """
    before = before or utcnow()
    result = SubmissionResult(agency=spec.code)
    refusals: list[Refusal] = []
    outcomes: list[RecordOutcome | None] = []
    valid: list[tuple[int, ViolationRecord]] = []
    for index, data in enumerate(records):
        raw = _raw(data)
        key = (spec.violation_mapping.record_id or "") if native else "agency_record_id"
        claimed = data.get(key) if isinstance(data, dict) else None
        # any id the agency gave names the record, 0 included; "" or none: its place in the batch
        claimed_ref = None if claimed is None else _readable(_as_id(claimed) if native else str(claimed))
        ref = claimed_ref or f"item {index}"
        try:
            if not isinstance(data, dict):
                raise ContractViolation.of([Problem(ref, "(record)", "is not a JSON object")])
            not_text = _surrogate_problems(data, ref)
            try:
                if native:
                    record = native_to_violation(data, spec.violation_mapping, agency_code=spec.code, record=ref)
                else:
                    record = _canonical(data, spec.code, ref)
            except ContractViolation as exc:
                named = {p.field for p in not_text}
                raise ContractViolation.of(not_text + [p for p in exc.problems if p.field not in named]) from exc
            if not_text:  # a field the contract does not read (an unmapped native one) is still refused
                raise ContractViolation.of(not_text)
        except ContractViolation as exc:
            refusals.append(Refusal(ref, exc.problems, raw))  # kept together below, one lookup for the batch
            result.quarantined += 1
            outcomes.append(RecordOutcome(index=index, agency_record_id=claimed_ref, outcome="quarantined",
                                          problems=[{"field": p.field, "reason": p.reason} for p in exc.problems]))  # fmt: skip
            continue
        outcomes.append(None)  # filled in once the valid records are stored together
        valid.append((index, record))
    take_agency_turns(session, {spec.code})  # before the quarantine rows (hub.violations.take_agency_turns)
    # each refused record is quarantined (counted, and answered as such); identical ones share one row
    quarantine_many(session, refusals, source="api", agency_code=spec.code,
                    raw_format="native" if native else "canonical")  # fmt: skip
    # one batched store, as a pull page is: same outcomes as storing the records one by one
    stored_all = store_violations(session, [r for _, r in valid], before=before)
    for (index, record), stored in zip(valid, stored_all, strict=True):
        setattr(result, stored.value, getattr(result, stored.value) + 1)
        outcomes[index] = RecordOutcome(index=index, agency_record_id=record.agency_record_id, outcome=stored.value)
    result.records = [o for o in outcomes if o is not None]
    # surrogatepass: a refused record's lone surrogate must not stop the batch's evidence (valid text digests as before)
    payload = json.dumps(records, ensure_ascii=False, sort_keys=True, default=str)
    digest = hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()
    audit.append(session, actor=actor, action="api.violations", subject=f"agency:{spec.code}",
                 detail={"records": len(records), "created": result.created, "updated": result.updated,
                         "unchanged": result.unchanged, "quarantined": result.quarantined,
                         "refs": [r.agency_record_id for r in result.records]},  # all: evidence bundles select by them
                 payload_digest=digest)  # fmt: skip
    return result
