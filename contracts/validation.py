"""Turn raw dicts into canonical records, or into a list of problems naming record, field and reason."""

from __future__ import annotations

import datetime as dt
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hub.errors import ContractViolation, Problem

RecordT = TypeVar("RecordT", bound=BaseModel)

_REASONS = {
    "missing": "is required",
    "extra_forbidden": "is not a field of this contract",
}


def describe_errors(exc: ValidationError, *, root: str = "") -> str:
    """One line naming each failing location and why, for configuration and envelope errors."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or root}: {e['msg']}" for e in exc.errors(include_url=False)
    )


def problems_of(exc: ValidationError, *, record: str, model: type[BaseModel]) -> list[Problem]:
    """Name each failure by the field's 双公示 code, whichever name the input used."""
    aliases = {name: (info.alias or name) for name, info in model.model_fields.items()}
    problems = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc") or ("(record)",)
        field = aliases.get(str(loc[0]), str(loc[0]))
        if len(loc) > 1:
            field += "[" + "][".join(str(p) for p in loc[1:]) + "]"
        reason = _REASONS.get(error["type"]) or error["msg"].removeprefix("Value error, ")
        problems.append(Problem(record=record, field=field, reason=reason))
    return problems


def parse_record(model: type[RecordT], data: dict[str, Any], *, record: str,
                 today: dt.date | None = None) -> RecordT:  # fmt: skip
    """Validate ``data`` into ``model`` or raise ContractViolation listing every problem.

    Args:
        model: LicenceGrant or ViolationRecord.
        data: the record, keyed by 双公示 codes or by field names.
        record: how to name this record in errors (a line number, an agency record id).
        today: the day in China to validate as of (no decision or repair after it, give or take a
            day's clock skew); by default the real one.
    """
    try:
        return model.model_validate(data, context={"today": today} if today else None)
    except ValidationError as exc:
        raise ContractViolation.of(problems_of(exc, record=record, model=model)) from exc
