"""A licence's lifecycle reaches the SOAP agencies (GSJ, DSJ), whose schemas have no lifecycle element of its own.

GSJ gets it as decision.status, DSJ in 备注 (beiZhu); a revocation whose XK_ZT still says 有效 must not
arrive looking like a valid licence. Pushed over real sockets to the sandbox agencies.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from adapters.base import OutboundMessage
from adapters.soap import reset_clients
from contracts.mapping import FieldMapping, licence_to_native
from contracts.records import LicenceGrant
from sandbox.soap_agencies import start_soap_agency
from tests.adapters.test_soap import soap_adapter, soap_grant, soap_spec

REVOKED = {"lifecycle": "revoked", "lifecycle_date": "2026-04-01", "lifecycle_reason": "以欺骗手段取得", "XK_ZT": "有效"}
EXPECTED = {  # what the agency records, by element path
    "GSJ": {"decision.status": "revoked", "remarks": "批次一；status revoked since 2026-04-01；reason: 以欺骗手段取得"},
    "DSJ": {"beiZhu": "批次一；许可状态：撤销（20260401）；原因：以欺骗手段取得"},
}


def _grant(**overrides) -> LicenceGrant:
    data = soap_grant(7).model_dump(mode="json", by_alias=True, exclude_none=True)
    return LicenceGrant.model_validate({**data, "BZ": "批次一", **overrides})


@pytest.fixture(params=sorted(EXPECTED))
def agency(request):
    agency = start_soap_agency(request.param)
    yield agency
    agency.stop()
    reset_clients()


def test_a_revocation_reaches_the_agency_as_a_revocation(agency, tmp_path):
    spec = soap_spec(agency.code, agency.endpoint)
    payload = licence_to_native(_grant(**REVOKED), spec.licence_mapping)
    soap_adapter(spec, tmp_path).deliver([OutboundMessage("m-1", "津南审批许〔2026〕0007号", payload)])
    recorded = agency.book.received["m-1"].payload
    assert {path: recorded.get(path) for path in EXPECTED[agency.code]} == EXPECTED[agency.code]


def test_a_granted_licence_carries_no_lifecycle_note(agency):
    spec = soap_spec(agency.code, agency.endpoint)
    native = licence_to_native(_grant(XK_ZT="有效"), spec.licence_mapping)
    assert native.get("remarks", native.get("beiZhu")) == "批次一"
    assert native.get("decision.status", "valid") == "valid"


def test_a_note_naming_no_licence_item_is_a_configuration_error():
    with pytest.raises(ValidationError, match="lifecycle_daet"):
        FieldMapping(notes={"beiZhu": ["撤销于{lifecycle_daet}"]})
