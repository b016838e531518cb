"""Violations a regulator submits through the API: the same contract and quarantine as pulled records.

The submitting agency is whoever authenticated: ``source_agency`` in a record is overwritten
with it, so a regulator can only ever report as itself. Records are identified by
(agency, the agency's own record id), so a resubmission updates or changes nothing. A record
that breaks the contract is quarantined with every reason and the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlmodel import Session

from contracts.mapping import default_severity, native_to_violation
from contracts.records import PenaltyType, ViolationRecord
from contracts.registry import AgencySpec
from contracts.validation import parse_record
from hub import audit
from hub.errors import ContractViolation, Problem
from hub.quarantine import quarantine
from hub.violations import store_violations

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


def _canonical(data: dict[str, Any], agency: str, ref: str) -> ViolationRecord:
    data = {**data, "source_agency": agency}  # forced: a regulator reports only as itself
    if "severity" not in data and isinstance(data.get("CF_CFLB"), list):
        try:
            data["severity"] = default_severity(tuple(PenaltyType(p) for p in data["CF_CFLB"]))
        except ValueError:
            pass  # the contract check names the unknown penalty type
    return parse_record(ViolationRecord, data, record=ref)


def submit_violations(session: Session, *, spec: AgencySpec, records: list[dict[str, Any]], actor: str,
                      native: bool = False) -> SubmissionResult:  # fmt: skip
    """Validate and store a batch from one agency in the caller's transaction.

    Args:
        session: the open transaction.
        spec: the submitting agency (from the caller's credentials, never from the body).
        records: canonical records keyed by CF_ codes, or the agency's native records.
        actor: the authenticated caller, for the audit log.
        native: map each record with the agency's ``violation_mapping`` first, as a pull would.
    """
    result = SubmissionResult(agency=spec.code)
    outcomes: list[RecordOutcome | None] = []
    valid: list[tuple[int, ViolationRecord]] = []
    for index, data in enumerate(records):
        raw = json.dumps(data, ensure_ascii=False, sort_keys=True, default=str)
        key = (spec.violation_mapping.record_id or "") if native else "agency_record_id"
        claimed = data.get(key) if isinstance(data, dict) else None
        ref = str(claimed) if claimed else f"item {index}"
        try:
            if not isinstance(data, dict):
                raise ContractViolation.of([Problem(ref, "(record)", "is not a JSON object")])
            if native:
                record = native_to_violation(data, spec.violation_mapping, agency_code=spec.code, record=ref)
            else:
                record = _canonical(data, spec.code, ref)
        except ContractViolation as exc:
            quarantine(session, source="api", agency_code=spec.code, record_ref=ref, problems=exc.problems, raw=raw)
            result.quarantined += 1
            outcomes.append(RecordOutcome(index=index, agency_record_id=claimed and str(claimed),
                                          outcome="quarantined",
                                          problems=[{"field": p.field, "reason": p.reason} for p in exc.problems]))  # fmt: skip
            continue
        outcomes.append(None)  # filled in once the valid records are stored together
        valid.append((index, record))
    # one batched store, as a pull page is: same outcomes as storing the records one by one
    for (index, record), stored in zip(valid, store_violations(session, [r for _, r in valid]), strict=True):
        setattr(result, stored.value, getattr(result, stored.value) + 1)
        outcomes[index] = RecordOutcome(index=index, agency_record_id=record.agency_record_id, outcome=stored.value)
    result.records = [o for o in outcomes if o is not None]
    digest = hashlib.sha256(json.dumps(records, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()
    audit.append(session, actor=actor, action="api.violations", subject=f"agency:{spec.code}",
                 detail={"records": len(records), "created": result.created, "updated": result.updated,
                         "unchanged": result.unchanged, "quarantined": result.quarantined,
                         "refs": [r.agency_record_id for r in result.records]},  # all: evidence bundles select by them
                 payload_digest=digest)  # fmt: skip
    return result
