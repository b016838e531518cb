"""A licence in an agency's own words: dates written exactly as strftime writes them, whatever the format."""

import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.mapping import FieldMapping, canonical_licence_to_native, licence_to_native
from contracts.records import LicenceGrant
from contracts.registry import load_registry
from tests.helpers import REPO

SAMPLES = (REPO / "contracts" / "samples" / "licences.jsonl").read_text(encoding="utf-8").splitlines()
GRANTS = [LicenceGrant.model_validate(json.loads(line)) for line in SAMPLES if line.strip()]
DATE_CODES = ("XK_JDRQ", "XK_YXQZ", "XK_YXQZI", "lifecycle_date")
FORMATS = ["%Y-%m-%d", "%Y年%m月%d日", "%Y%m%d", "%d/%m/%Y", "{%Y}.{%m}", "%Y-%m-%dT00:00:00", "%Y %b %d", "100%%-%Y"]


@pytest.mark.parametrize("code", sorted(load_registry()))
def test_every_agency_gets_each_date_as_strftime_writes_it_in_its_own_format(code):
    mapping = load_registry()[code].licence_mapping
    by_alias = {field.alias: name for name, field in LicenceGrant.model_fields.items()}
    checked = 0
    for grant in GRANTS:
        native = licence_to_native(grant, mapping)
        for canonical in DATE_CODES:
            value = getattr(grant, by_alias[canonical])
            if canonical in mapping.fields and value is not None:
                assert native[mapping.fields[canonical]] == value.strftime(mapping.date_formats[0])
                checked += 1
    assert checked >= len(GRANTS) * 3


@settings(max_examples=300, deadline=None)
@given(date=st.dates(min_value=dt.date(1, 1, 1)), fmt=st.sampled_from(FORMATS))
def test_any_date_in_any_format_is_written_as_strftime_writes_it(date, fmt):
    mapping = FieldMapping(fields={"XK_JDRQ": "decided", "XK_WSH": "no"}, date_formats=[fmt])
    grant = GRANTS[0].model_copy(update={"decision_date": date})
    assert licence_to_native(grant, mapping) == {"decided": date.strftime(fmt), "no": grant.decision_no}


@pytest.mark.parametrize("code", sorted(load_registry()))
def test_a_stored_grant_maps_as_the_grant_itself_does(code):
    """The push maps the stored JSON form (without None), not a validated model: the same payload."""
    mapping = load_registry()[code].licence_mapping
    for grant in GRANTS:
        stored = json.loads(json.dumps(grant.model_dump(mode="json", by_alias=True, exclude_none=True)))
        assert canonical_licence_to_native(stored, mapping) == licence_to_native(grant, mapping)


@pytest.mark.parametrize("value", ["2026-13-45", "2026-02-30", "not a date", "", 20260105, None])
def test_a_stored_date_that_is_no_date_is_refused_naming_its_field(value):
    stored = {"XK_WSH": "no. 1", "XK_JDRQ": value}
    mapping = FieldMapping(fields={"XK_JDRQ": "decided", "XK_WSH": "no"}, date_formats=["%Y年%m月%d日"])
    if value is None:  # absent: left out, as every empty field
        assert canonical_licence_to_native(stored, mapping) == {"no": "no. 1"}
        return
    with pytest.raises(ValueError, match=r"XK_JDRQ \(decided\)"):
        canonical_licence_to_native(stored, mapping)


@pytest.mark.parametrize("iso", ["2026-W01-1", "20260105"])
def test_a_stored_date_in_another_iso_form_is_written_as_strftime_writes_that_date(iso):
    mapping = FieldMapping(fields={"XK_JDRQ": "decided"}, date_formats=["%Y年%m月%d日"])
    expected = dt.date.fromisoformat(iso).strftime("%Y年%m月%d日")
    assert canonical_licence_to_native({"XK_JDRQ": iso}, mapping) == {"decided": expected}
