"""POST /api/v1/licences: the approval system records grants (one, or a batch refused whole)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel

from hub.api.auth import Permission, Principal
from hub.api.deps import JsonBody, RuntimeDep, SessionDep, require
from hub.api.errors import ApiError
from hub.errors import ContractViolation, RefusedInput
from hub.intake import RawRecord, validate_grants
from hub.licences import record_grants

router = APIRouter(prefix="/api/v1/licences", tags=["approval system"])
MAX_BATCH = 5000


class LicenceIntakeResult(BaseModel):
    created: int
    changed: int
    unchanged: int
    deliveries: int


@router.post("", response_model=LicenceIntakeResult, summary="Record licence grants (XK_ records)",
             responses={415: {"description": "the body is not sent as application/json"},
                        422: {"description": "some record is invalid: every problem listed, nothing written"}})  # fmt: skip
def record(
    session: SessionDep,
    runtime: RuntimeDep,
    who: Annotated[Principal, require(Permission.WRITE_LICENCES)],
    _json: JsonBody,
    body: Annotated[dict[str, Any] | list[dict[str, Any]], Body(description="one record, or a list of records")],
) -> LicenceIntakeResult:
    items = body if isinstance(body, list) else [body]
    if not items:
        raise ApiError(422, "empty_batch", "send at least one licence record")
    if len(items) > MAX_BATCH:
        raise RefusedInput(f"{len(items)} records is over the {MAX_BATCH} record batch limit")
    records = [RawRecord(n, data, json.dumps(data, ensure_ascii=False)) for n, data in enumerate(items, start=1)]
    valid, invalid = validate_grants(records)
    if invalid:  # the whole batch is refused, with every problem of every record
        raise ContractViolation.of([p for _, problems in invalid for p in problems])
    result = record_grants(session, (g for _, g in valid), runtime.registry, actor=who.actor)
    session.commit()
    return LicenceIntakeResult(created=result.created, changed=result.changed, unchanged=result.unchanged,
                               deliveries=result.deliveries)  # fmt: skip
