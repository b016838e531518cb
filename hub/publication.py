"""Publication windows and credit repair (NDRC Order 36, 信用修复管理办法).

A penalty is published — and counts against the company — from its decision date until
its publication ends: the agency's own CF_GSJZQ when it states one (sector rules may be
stricter than Order 36), otherwise the Order 36 maximum for its severity class. A repaired
record stops counting from its repair date. Neither kind is deleted: both stay in the database and the
audit trail, and an auditor can ask to see them.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping
from enum import StrEnum

from contracts.fields import today_in_china

__all__ = ["ORDER_36_MONTHS", "Standing", "add_months", "publication_end", "standing", "today_in_china"]

#: Maximum publication period per severity class, in months from the decision date.
ORDER_36_MONTHS: Mapping[str, int] = {"minor": 3, "ordinary": 12, "serious": 36}


class Standing(StrEnum):
    """Whether a penalty counts today, and if not, why not."""

    COUNTS = "counts"
    REPAIRED = "repaired"  # credit repaired: no longer shown or used
    EXPIRED = "expired"  # past its publication period


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` plus whole months, clamped to the month's last day (Jan 31 + 1 month = Feb 28/29)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def publication_end(severity: str, decision_date: dt.date, stated_end: dt.date | None,
                    months: Mapping[str, int] = ORDER_36_MONTHS) -> dt.date:  # fmt: skip
    """The last day a penalty is published.

    Args:
        severity: minor, ordinary or serious.
        decision_date: CF_JDRQ.
        stated_end: CF_GSJZQ, when the agency gave one; it wins over the default.
        months: maximum periods per class (from contracts/verdict_rules.toml).
    """
    if stated_end is not None:
        return stated_end
    # An unknown class is treated as the heaviest: showing too much is safer than hiding.
    return add_months(decision_date, months.get(severity, max(months.values())))


def standing(*, severity: str, decision_date: dt.date, stated_end: dt.date | None, repair_status: str,
             repair_date: dt.date | None, today: dt.date,
             months: Mapping[str, int] = ORDER_36_MONTHS) -> Standing:  # fmt: skip
    """Whether a penalty counts against its company on ``today``.

    A repair counts from its repair date on: a verdict or history as of an earlier day (evidence
    re-checked, a record repaired after the check) still shows the penalty that counted then. A
    repaired record without a date (stored before the contract required one) is repaired outright.
    """
    if repair_status == "repaired" and (repair_date is None or repair_date <= today):
        return Standing.REPAIRED
    if today > publication_end(severity, decision_date, stated_end, months):
        return Standing.EXPIRED
    return Standing.COUNTS
