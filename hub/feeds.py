"""The licence feed a regulator pulls: every licence revision routed to it, in order, resumable.

The cursor is the id of the last revision returned (revisions are append-only, so ids only
grow): ``after=0`` starts from the beginning, and passing back ``next_cursor`` resumes exactly
where the last page ended, with nothing skipped or repeated. Changes, cancellations and
revocations are revisions too, so they appear in the feed in the order they were recorded.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel
from sqlmodel import Session, select

from hub.models import Delivery, Licence, LicenceRevision

__all__ = ["FeedItem", "FeedPage", "MAX_FEED_LIMIT", "licence_feed"]

MAX_FEED_LIMIT = 1000


class FeedItem(BaseModel):
    cursor: str
    message_id: str  # the same idempotency key the push channel uses for this revision
    decision_no: str
    version: int
    lifecycle: str
    recorded_at: dt.datetime
    licence: dict  # the canonical record, keyed by 双公示 codes


class FeedPage(BaseModel):
    agency: str
    items: list[FeedItem]
    next_cursor: str  # pass back as ``after``; equal to ``after`` when nothing new
    has_more: bool


def licence_feed(session: Session, *, agency: str, after: int = 0, limit: int = 100) -> FeedPage:
    """Up to ``limit`` revisions routed to ``agency`` with revision id greater than ``after``."""
    limit = max(1, min(limit, MAX_FEED_LIMIT))
    rows = session.exec(
        select(Delivery.message_id, LicenceRevision, Licence.decision_no)
        .join(LicenceRevision, LicenceRevision.id == Delivery.revision_id)
        .join(Licence, Licence.id == LicenceRevision.licence_id)
        .where(Delivery.agency_code == agency, LicenceRevision.id > after)
        .order_by(LicenceRevision.id)
        .limit(limit + 1)
    ).all()
    items = [
        FeedItem(cursor=str(rev.id), message_id=mid, decision_no=no, version=rev.version, lifecycle=rev.lifecycle,
                 recorded_at=rev.recorded_at, licence=rev.payload)  # fmt: skip
        for mid, rev, no in rows[:limit]
    ]
    return FeedPage(agency=agency, items=items, next_cursor=items[-1].cursor if items else str(after),
                    has_more=len(rows) > limit)  # fmt: skip
