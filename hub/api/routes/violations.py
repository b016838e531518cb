"""POST /api/v1/violations: a regulator reports penalties, always as itself."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hub.api.auth import Permission, Principal
from hub.api.deps import JsonBody, RuntimeDep, SessionDep, require
from hub.submissions import SubmissionResult, submit_violations

router = APIRouter(prefix="/api/v1/violations", tags=["regulators"])


class ViolationBatch(BaseModel):
    """Records keyed by CF_ codes (``canonical``) or in the agency's own field names (``native``).

    ``source_agency`` is set from the caller's credentials; a value in a record is ignored.
    """

    format: Literal["canonical", "native"] = "canonical"
    records: list[dict[str, Any]] = Field(min_length=1, max_length=5000)


@router.post("", response_model=SubmissionResult, summary="Report violation records (idempotent on record ids)")
def submit(session: SessionDep, runtime: RuntimeDep,
           who: Annotated[Principal, require(Permission.WRITE_VIOLATIONS)], _json: JsonBody,
           batch: ViolationBatch) -> SubmissionResult:  # fmt: skip
    spec = runtime.agency(who.agency or "")
    result = submit_violations(session, spec=spec, records=batch.records, actor=who.actor,
                               native=batch.format == "native")  # fmt: skip
    session.commit()
    return result
