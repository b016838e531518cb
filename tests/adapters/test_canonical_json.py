"""The canonical JSON that receipts' digests are taken of is the standard library's, byte for byte.

An agency computes its digest with its own JSON library over what it received; the hub's is
built faster, and must never differ from ``json.dumps(sort_keys=True, ensure_ascii=False,
separators=(",", ":"))``, or every receipt would look like a corrupted delivery.
"""

import datetime as dt
import enum
import hashlib
import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.base import as_json_values, canonical_json, json_text, payload_digest


def reference(payload) -> str:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# every code point but lone surrogates (which no UTF-8 text can hold): control characters,
# quotes, backslashes, U+2028, astral planes
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
SCALARS = TEXT | st.integers(min_value=-(2**70), max_value=2**70) | st.booleans() | st.none() | st.floats()
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                    max_leaves=20)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TEXT, JSON, max_size=8))
def test_canonical_json_is_the_standard_librarys_text(payload):
    expected = reference(payload)
    assert canonical_json(payload) == expected
    assert payload_digest(payload) == hashlib.sha256(expected.encode("utf-8")).hexdigest()


class Colour(enum.StrEnum):
    RED = "红"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize("value", [1e-05, 1e16, 0.1, 2**64, -(2**63) - 1, Colour.RED, Level.HIGH, True, (1, "a"),
                                   "\x00\x1f\x7f\u2028\U0001f600\"\\"])  # fmt: skip
def test_values_a_faster_serialiser_writes_differently_come_out_as_json_writes_them(value):
    payload = {"b": [value], "a": {"x": value}}
    assert canonical_json(payload) == reference(payload)


@pytest.mark.parametrize("value", [dt.date(2026, 1, 5), Decimal("1.5"), object()])
def test_what_json_refuses_is_refused(value):
    with pytest.raises(TypeError):
        canonical_json({"a": value})


def test_keys_that_are_not_text_are_written_as_json_writes_them():
    payload = {2: "a", 1: None, 10: [1]}
    assert canonical_json(payload) == reference(payload)


ODD = st.dates() | st.decimals(allow_nan=False) | st.tuples(TEXT, st.integers()) | st.floats(allow_nan=False)
LOGGED = st.recursive(SCALARS.filter(lambda v: v == v) | ODD, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(TEXT | st.integers(), inner, max_size=4), max_leaves=20)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TEXT, LOGGED, max_size=8))
def test_a_log_entrys_detail_is_what_json_gives_back(detail):
    expected = json.loads(json.dumps(detail, ensure_ascii=False, default=str))
    values = as_json_values(detail)
    assert values == expected and repr(values) == repr(expected)  # repr: 1 and 1.0, True and 1 differ


def test_a_log_entrys_detail_is_a_copy():
    detail = {"receipts": [{"ack": "A-1"}]}
    values = as_json_values(detail)
    detail["receipts"][0]["ack"] = "changed"
    assert values == {"receipts": [{"ack": "A-1"}]}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(TEXT | st.integers(), JSON, max_size=8))
def test_a_json_column_reads_back_what_json_would_have_written(value):
    """The PostgreSQL engine's JSON serialiser: other text than json.dumps, never other values."""
    written, expected = json_text(value), json.dumps(value)
    assert repr(json.loads(written)) == repr(json.loads(expected))  # repr: nan, 1 and 1.0, True and 1


@pytest.mark.parametrize("value", [dt.date(2026, 1, 5), Decimal("1.5"), {"a": {1, 2}}])
def test_a_json_column_refuses_what_json_refuses(value):
    with pytest.raises(TypeError):
        json_text({"a": value})
