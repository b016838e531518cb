"""Contract tests through the whole hub, over real sockets, for every adapter kind.

What the hub pushed is what each agency recorded, field by field; what each agency holds is
what the hub stored after mapping, field by field; malformed records are quarantined with
their reason and raw payload while the rest of their batch is stored.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import Session, select

from contracts.mapping import licence_to_native
from contracts.records import LicenceGrant
from hub.db import session_scope
from hub.intake import import_licences, read_licence_file
from hub.models import QuarantinedRecord, Violation
from hub.operations import sync_agencies
from hub.routing import route
from hub.runtime import HubRuntime
from hub.settings import Settings
from sandbox.cluster import ABBREVIATIONS, ALL_AGENCIES, start_sandbox


@pytest.fixture(scope="module")
def synced(tmp_path_factory, sample_licences_path):
    """All seven agencies, the sample grants pushed to them, and their penalties pulled back once."""
    root = tmp_path_factory.mktemp("e2e")
    sandbox = start_sandbox(root / "sandbox")
    mp = pytest.MonkeyPatch()
    for key, value in sandbox.env.items():
        mp.setenv(key, value)
    runtime = HubRuntime(Settings(data_dir=root / "hub", database_url=None, pki_dir=root / "no-pki"),
                         overrides=sandbox.overrides)  # fmt: skip
    runtime.init_database()
    records = read_licence_file(sample_licences_path)
    with session_scope(runtime.engine) as session:
        import_licences(session, records, runtime.registry, actor="test")
    outcomes = list(sync_agencies(runtime, runtime.registry, pull=False))
    for agency in sandbox.agencies.values():
        if hasattr(agency, "publish"):
            agency.publish()
    outcomes += list(sync_agencies(runtime, runtime.registry, push=False))
    grants = [LicenceGrant.model_validate(r.data) for r in records]
    yield runtime, sandbox, grants, outcomes
    sandbox.stop()
    runtime.dispose()
    mp.undo()


@pytest.fixture(scope="module")
def sample_licences_path():
    from tests.helpers import REPO

    return REPO / "contracts" / "samples" / "licences.jsonl"


def test_every_step_succeeded(synced):
    _, _, _, outcomes = synced
    assert all(ok for _, ok in outcomes), outcomes


@pytest.mark.parametrize("code", ALL_AGENCIES)
def test_each_agency_recorded_exactly_what_was_pushed(synced, code):
    runtime, sandbox, grants, _ = synced
    spec = runtime.agency(code)
    expected = [licence_to_native(g, spec.licence_mapping) for g in grants if code in route(g, runtime.registry.values())]
    received = sandbox.books[code].licences()
    key = sorted
    assert expected, f"no sample grant routes to {code}"
    assert key(map(repr, map(sorted_items, received))) == key(map(repr, map(sorted_items, expected)))


def sorted_items(payload: dict) -> list:
    return sorted((k, str(v)) for k, v in payload.items())


@pytest.mark.parametrize("code", ALL_AGENCIES)
def test_each_agency_numbers_its_decisions_with_its_own_abbreviation(synced, code):
    _, sandbox, _, _ = synced
    numbers = [p.decision_no for p in sandbox.books[code].penalties if p.decision_no]  # "" is a malformed one
    assert numbers, f"{code} invented no penalties"
    assert all(n.startswith(f"津南{ABBREVIATIONS[code]}罚〔") for n in numbers), numbers


@pytest.mark.parametrize("code", ALL_AGENCIES)
def test_what_the_agency_holds_is_what_the_hub_stored(synced, code):
    runtime, sandbox, _, _ = synced
    drafts = sandbox.books[code].penalties
    assert drafts, f"{code} invented no penalties for the sample companies"
    with Session(runtime.engine) as session:
        stored = {v.agency_record_id: v for v in session.exec(select(Violation).where(Violation.source_agency == code))}
        quarantined = session.exec(select(QuarantinedRecord).where(QuarantinedRecord.agency_code == code)).all()
    good = [d for d in drafts if d.malformation is None]
    bad = [d for d in drafts if d.malformation is not None]
    assert sorted(stored) == sorted(d.record_id for d in good)
    for draft in good:
        row = stored[draft.record_id]
        assert (row.uscc, row.subject_name, row.decision_no) == (draft.uscc, draft.subject_name, draft.decision_no)
        assert row.decision_date == dt.date.fromisoformat(draft.decision_date)
        assert row.payload["CF_YXQ"] == draft.validity_end
        assert sorted(row.penalty_types) == sorted(draft.penalties)
        assert row.fine == draft.fine_wanyuan  # exact Decimal 万元, whatever unit the agency sent
        assert row.payload["CF_WFXW"] == draft.violation_type
    for draft in bad:  # the rest of their batch was stored (above); these wait in quarantine
        (match,) = [q for q in quarantined if draft.record_id in q.raw]
        assert match.reasons and all(r["reason"] for r in match.reasons)


def test_every_kind_of_malformed_record_was_met_and_quarantined_with_its_raw_payload(synced):
    runtime, sandbox, _, _ = synced
    kinds = {d.malformation for book in sandbox.books.values() for d in book.penalties if d.malformation}
    assert len(kinds) == 4  # bad USCC, missing decision number, unparseable date, amount in the wrong unit
    with Session(runtime.engine) as session:
        reasons = " ".join(r["field"] + " " + r["reason"] for q in session.exec(select(QuarantinedRecord)) for r in q.reasons)
    for field in ("CF_XDR_SHXYM", "CF_WSH", "CF_JDRQ", "CF_NR_FK"):
        assert field in reasons
