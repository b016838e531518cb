"""Records the contract refused, kept with every reason and the exact raw payload."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session

from hub.errors import Problem
from hub.models import QuarantinedRecord

__all__ = ["quarantine"]


def quarantine(session: Session, *, source: str, record_ref: str, problems: Iterable[Problem], raw: str,
               agency_code: str | None = None) -> QuarantinedRecord:  # fmt: skip
    """Keep a refused record in the caller's transaction; nothing about it is lost."""
    row = QuarantinedRecord(
        source=source,
        agency_code=agency_code,
        record_ref=record_ref[:500],
        reasons=[{"field": p.field, "reason": p.reason} for p in problems],
        raw=raw,
    )
    session.add(row)
    return row
