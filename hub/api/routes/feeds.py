"""GET /api/v1/feeds/licences: a regulator pulls the licence revisions routed to it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from hub.api.auth import Permission, Principal
from hub.api.deps import RuntimeDep, SessionDep, require
from hub.api.errors import ApiError
from hub.api.params import Text
from hub.feeds import MAX_FEED_LIMIT, FeedPage, licence_feed

router = APIRouter(prefix="/api/v1/feeds", tags=["regulators"])


@router.get("/licences", response_model=FeedPage, summary="Licence revisions routed to an agency, in order")
def licences(
    session: SessionDep,
    runtime: RuntimeDep,
    who: Annotated[Principal, require(Permission.READ_FEED)],
    after: Annotated[str, Query(max_length=20, description="next_cursor of the previous page; 0 to start")] = "0",
    limit: Annotated[int, Query(ge=1, le=MAX_FEED_LIMIT)] = 100,
    agency: Annotated[Text | None, Query(max_length=16, description="defaults to the caller's own agency")] = None,
) -> FeedPage:
    wanted = (agency or who.agency or "").upper()
    if not wanted:
        raise ApiError(422, "agency_required", "name the agency whose feed you want (?agency=CODE)")
    if wanted != who.agency and not who.can(Permission.READ_ANY_FEED):
        raise ApiError(403, "forbidden", f"{who.name} may read only its own feed ({who.agency}), not {wanted}'s")
    if wanted not in runtime.registry:
        raise ApiError(404, "unknown_agency",
                       f"no agency {wanted!r} is configured; known: {', '.join(runtime.registry)}")  # fmt: skip
    if not (after.isascii() and after.isdigit()) or int(after) >= 2**63:  # what a revision id can be
        raise ApiError(422, "invalid_cursor", f"{after!r} is not a cursor this feed gave out")
    return licence_feed(session, agency=wanted, after=int(after), limit=limit)
