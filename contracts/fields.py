"""The contract's shared field types: text every store can hold, dates written as dates, amounts in one form.

Kept apart from the records so that each check exists once and every text, date and amount field of
both records goes through it.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo

__all__ = [
    "CLOCK_SKEW",
    "Date",
    "FreeText",
    "Line",
    "WanYuan",
    "latest_plausible_date",
    "optional_text",
    "text",
    "today_in_china",
]

_CHINA = ZoneInfo("Asia/Shanghai")

#: How far past today (in China) a date may lie before it is refused as impossible: a sender's clock
#: may run ahead, and a record decided just after midnight in Beijing may be checked on a machine still
#: on the day before.
CLOCK_SKEW = dt.timedelta(days=1)


def today_in_china(now: dt.datetime | None = None) -> dt.date:
    """The calendar date in China: decision dates and publication ends are Beijing dates."""
    return (now or dt.datetime.now(dt.UTC)).astimezone(_CHINA).date()


_latest: tuple[float, dt.date] = (0.0, dt.date.min)  # (monotonic time it holds until, the date)


def latest_plausible_date(info: ValidationInfo) -> dt.date:
    """The last date a decision or repair can bear: today in China plus CLOCK_SKEW.

    A caller that validates as of another day (a replay, a test of a fixed day) passes it as the
    validation context's ``today``; the contracts cannot take the hub's clock (they are imported by it).
    """
    global _latest
    today = (info.context or {}).get("today") if isinstance(info.context, dict) else None
    if today is not None:
        return today + CLOCK_SKEW
    # read for two fields of every record, the time zone conversion was 6% of a pull's checks; a
    # minute late at midnight, the bound errs by a minute within its day of tolerance
    if time.monotonic() >= _latest[0]:
        _latest = (time.monotonic() + 60.0, today_in_china() + CLOCK_SKEW)
    return _latest[1]


# NUL is refused by PostgreSQL text columns (a 500 for one bad record), and a lone surrogate cannot be
# encoded as UTF-8 at all (json, the database driver and the audit hash all fail on it). The other C0
# controls are invisible in every view a reviewer has. Free text may keep tab and line breaks.
# DEL and the C1 controls (U+0080-U+009F, e.g. NEL from a Latin-1 round trip) are as invisible; a line
# or paragraph separator (U+2028/9) breaks a one-line field as a line feed does.
_NOT_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NOT_IN_FREE_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refusing(pattern: re.Pattern[str], what: str):
    # one validator (a Python call per field of every record) and, for nearly all text, one C-level
    # isprintable() that tells there is nothing to look for: the checks were a tenth of a pull's
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        # stripped here as the records' str_strip_whitespace would after us: a line break around a
        # name is whitespace to drop, not a control character to refuse
        value = value.strip()
        if value.isprintable():
            return value
        found = _SURROGATE.search(value)
        if found is not None:  # before pydantic's own refusal, which names neither the character nor where
            raise ValueError(f"contains an unpaired UTF-16 surrogate U+{ord(found.group()):04X} at character "
                             f"{found.start() + 1}, which no text encoding can hold")  # fmt: skip
        found = pattern.search(value)
        if found is not None:
            raise ValueError(f"contains the control character U+{ord(found.group()):04X} at character "
                             f"{found.start() + 1}, which {what} cannot hold")  # fmt: skip
        return value

    return check


_IN_LINE = BeforeValidator(_refusing(_NOT_IN_LINE, "a one-line field"))
_IN_FREE_TEXT = BeforeValidator(_refusing(_NOT_IN_FREE_TEXT, "text"))


def text(limit: int | None = None, *, free: bool = False, required: bool = True) -> Any:
    """Text of at most ``limit`` characters (what the column storing it holds), non-empty if ``required``.

    Free text (facts, content, remarks) may hold tab, CR and LF; one line of text (names, numbers,
    codes) no control character at all. The bounds come first so that they are the string's own
    (pydantic words them "String should have at most 200 characters").
    """
    bounds = Field(min_length=1 if required else None, max_length=limit)
    return Annotated[str, bounds, _IN_FREE_TEXT if free else _IN_LINE]


def optional_text(limit: int | None = None, *, free: bool = False) -> Any:
    """``text`` or None; the bound stays on the field itself, where storage checks look for it."""
    return Annotated[str | None, Field(max_length=limit), _IN_FREE_TEXT if free else _IN_LINE]


#: One line of text of any length, or None.
Line = optional_text()
#: Free text of any length, or None.
FreeText = optional_text(free=True)


# The date alone, or a database export's midnight after it ("2026-03-01 00:00:00", "…T00:00:00+08:00",
# "…Z"): the same calendar date. Any other time is refused, as pydantic refused it before.
_ISO_DATE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:[T ]00:00(?::00(?:\.0+)?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?)?",
                       re.ASCII)  # fmt: skip


def _written_date(value: Any) -> Any:
    # Left to itself pydantic reads a number, or a string of digits such as "20260301", as seconds since
    # 1970: a date sent as an integer became 1970-01-01 or a misleading "should have zero time".
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        if written := _ISO_DATE.fullmatch(value.strip()):
            return written.group(1)
        raise ValueError(f"{value!r} is not a date written YYYY-MM-DD")
    kind = "a number" if isinstance(value, int | float | Decimal) else f"a {type(value).__name__}"
    raise ValueError(f"must be a date written YYYY-MM-DD, not {kind} ({value!r})")


#: A calendar date, from a date or its ISO text only.
Date = Annotated[dt.date, BeforeValidator(_written_date)]


def _normal_amount(value: Decimal) -> Decimal:
    # One form per amount: 0.20 and 0.2 (or 2000.00 yuan read as 0.2000 万元) are one fine, and the stored
    # record's digest, hence "changed or not", is taken over this form.
    if value == 0:
        return Decimal(0)  # also -0
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal  # 2E+1 -> 20


def _ascii_amount(value: Any) -> Any:
    # Decimal() reads other scripts' digits ("٠.٢" is 0.2); the native mapping refuses them, and so does this
    if isinstance(value, str) and not value.isascii():
        raise ValueError(f"{value!r} is not an amount written in ASCII digits")
    return value


#: An amount in 万元 (10,000 yuan), exact, as decimal(18,6) holds it.
WanYuan = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=6), BeforeValidator(_ascii_amount),
                    AfterValidator(_normal_amount)]
