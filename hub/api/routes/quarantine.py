"""GET /api/v1/quarantine: records the contract refused, for administrators (as `hub quarantine list|show`).

Raw payloads are a regulator's or the approval system's data as it arrived, and reasons name its
fields: only admin tokens read them. Fixing and retrying stay on the command line, next to the
agency files the fix is made in.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel

from hub.api.auth import Principal, Role
from hub.api.deps import SessionDep, current_principal, in_worker_thread
from hub.api.errors import ApiError
from hub.api.params import Text
from hub.quarantine import QuarantineDetail, QuarantineEntry, get_entry, list_entries

router = APIRouter(prefix="/api/v1/quarantine", tags=["administrators"])


async def _admin(request: Request) -> Principal:
    # no Permission names this: the roles' policy (hub.api.auth) grants it to none but admins
    principal = await current_principal(request)
    if principal.role is not Role.ADMIN:
        raise ApiError(403, "forbidden", f"a {principal.role.value} may not read quarantined records (admins only)")
    return principal


Admin = Annotated[Principal, Depends(_admin)]


class QuarantinePage(BaseModel):
    """One page of quarantined records, newest first, and how many match in all."""

    total: int
    offset: int
    limit: int
    items: list[QuarantineEntry]


@router.get("", response_model=QuarantinePage, summary="Quarantined records, newest first (open ones by default)")
@in_worker_thread
def list_quarantine(
    session: SessionDep,
    _who: Admin,
    agency: Annotated[Text | None, Query(max_length=16, description="only this agency's records")] = None,
    source: Annotated[Literal["intake", "pull", "api"] | None, Query(description="intake, pull or api")] = None,
    include_released: Annotated[bool, Query(alias="all", description="also records already released")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> QuarantinePage:
    total, items = list_entries(session, agency=agency, source=source, include_released=include_released,
                                limit=limit, offset=offset)  # fmt: skip
    return QuarantinePage(total=total, offset=offset, limit=limit, items=items)


@router.get("/{qid}", response_model=QuarantineDetail, summary="One quarantined record: every reason and the raw payload")
@in_worker_thread
def show_quarantine(session: SessionDep, _who: Admin,
                    qid: Annotated[int, Path(ge=1, le=2**63 - 1)]) -> QuarantineDetail:  # a row id PostgreSQL can hold
    entry = get_entry(session, qid)
    if entry is None:
        raise ApiError(404, "not_found", f"no quarantined record {qid}")
    return entry
