"""Split a JSON page into its envelope and its records, keeping each record's exact text.

A quarantined record must be stored as the agency sent it, byte for byte, not as we
re-serialised it. ``split_items`` walks the document once with the C-accelerated
``raw_decode`` and slices every element of the items array out of the original text.
Numbers with a fraction become ``Decimal`` so amounts stay exact.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

__all__ = ["JsonShapeError", "split_items"]

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder(parse_float=Decimal)


class JsonShapeError(ValueError):
    """The JSON is valid but not shaped as the agency's dialect promises."""


def _skip(text: str, idx: int) -> int:
    return _WS.match(text, idx).end()


def _expect(text: str, idx: int, char: str) -> int:
    idx = _skip(text, idx)
    if text[idx : idx + 1] != char:
        raise json.JSONDecodeError(f"expected {char!r}", text, idx)
    return idx + 1


def _object(text: str, idx: int, path: list[str]) -> tuple[dict[str, Any], int, list[tuple[str, Any]] | None]:
    """Decode the object at ``idx``; the member named ``path[0]`` is followed (or split, if last)."""
    idx = _expect(text, idx, "{")
    result: dict[str, Any] = {}
    found: list[tuple[str, Any]] | None = None
    idx = _skip(text, idx)
    if text[idx : idx + 1] == "}":
        return result, idx + 1, None
    while True:
        key, idx = _DECODER.raw_decode(text, _skip(text, idx))
        if not isinstance(key, str):
            raise json.JSONDecodeError("object key must be a string", text, idx)
        idx = _skip(text, _expect(text, idx, ":"))
        if path and key == path[0] and len(path) == 1 and text[idx : idx + 1] == "[":
            found, idx = _array(text, idx)
            result[key] = None  # the records are returned separately, not twice
        elif path and key == path[0] and len(path) > 1 and text[idx : idx + 1] == "{":
            result[key], idx, found = _object(text, idx, path[1:])
        else:
            result[key], idx = _DECODER.raw_decode(text, idx)
        idx = _skip(text, idx)
        if text[idx : idx + 1] == ",":
            idx += 1
            continue
        return result, _expect(text, idx, "}"), found


def _array(text: str, idx: int) -> tuple[list[tuple[str, Any]], int]:
    idx = _skip(text, _expect(text, idx, "["))
    items: list[tuple[str, Any]] = []
    if text[idx : idx + 1] == "]":
        return items, idx + 1
    while True:
        start = _skip(text, idx)
        value, idx = _DECODER.raw_decode(text, start)
        items.append((text[start:idx], value))
        idx = _skip(text, idx)
        if text[idx : idx + 1] == ",":
            idx += 1
            continue
        return items, _expect(text, idx, "]")


def split_items(text: str, items_path: str) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """Return (envelope, [(raw text, record), ...]) for the array at the dotted ``items_path``.

    Raises:
        json.JSONDecodeError: the text is not JSON.
        JsonShapeError: there is no array at ``items_path``, or an element is not an object.
    """
    envelope, end, items = _object(text, 0, items_path.split("."))
    if _skip(text, end) != len(text):
        raise json.JSONDecodeError("extra data after the document", text, end)
    if items is None:
        raise JsonShapeError(f"no record list at {items_path!r}")
    for raw, value in items:
        if not isinstance(value, dict):
            raise JsonShapeError(f"a record is not a JSON object: {raw[:80]}")
    return envelope, items
