"""One clock for the hub: timezone-aware UTC (SQLModel's UTCDateTime stores it on both databases)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
