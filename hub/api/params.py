"""Parameter types shared by the API routes and the web pages.

``Text`` is a query or path string without control characters: no identifier, name, case id or
agency code holds one, and PostgreSQL refuses NUL outright (a 500 deep in a query instead of
a clear 422 naming the parameter).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["Text"]


def _no_control_characters(value: str) -> str:
    for at, ch in enumerate(value, start=1):
        if unicodedata.category(ch) in ("Cc", "Cs"):  # worded as contracts/fields.py words it for records
            raise ValueError(f"contains the control character U+{ord(ch):04X} at character {at}, "
                             "which no identifier, name or case id holds")  # fmt: skip
    return value


Text = Annotated[str, AfterValidator(_no_control_characters)]
