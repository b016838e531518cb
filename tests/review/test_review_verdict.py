"""The pre-approval verdict: credit repair, publication windows, freshness, per-item rules, evidence."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import Session, select

from hub.compliance import load_rules, run_check
from hub.db import session_scope
from hub.history import HistoryFilter, company_history, find_company
from hub.models import AuditEntry, ComplianceCheck
from hub.publication import add_months, publication_end, today_in_china

from review_seed import TODAY


def _check(hub, uscc, case="CASE-2026-001", item=None):
    with session_scope(hub.engine) as session:
        return run_check(session, company=find_company(session, uscc), case_id=case, actor="reviewer:wang",
                         rules=load_rules(), agencies=hub.runtime.registry,
                         freshness_hours=hub.runtime.settings.freshness_hours, approval_item=item)  # fmt: skip


def test_clean_company_with_fresh_data_is_green(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    result = _check(hub, uscc)
    assert (result.verdict, result.reasons, result.stale_agencies) == ("GREEN", [], [])


def test_repaired_violation_does_not_change_the_verdict_but_the_same_unrepaired_does(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    hub.violation(uscc, "SCJG", "P-1", severity="serious", repair_status="repaired",
                  repair_date=(TODAY - dt.timedelta(days=3)).isoformat())  # fmt: skip
    assert _check(hub, uscc).verdict == "GREEN"

    hub.violation(uscc, "SCJG", "P-1", severity="serious")  # the agency withdraws the repair
    result = _check(hub, uscc)
    assert result.verdict == "RED"
    assert {(r.rule, r.agency) for r in result.reasons} == {("serious-violation", "SCJG")}
    assert "P-1" in result.reasons[0].record


@pytest.mark.parametrize(
    ("severity", "age_days", "counts"),
    [
        ("minor", 80, True), ("minor", 100, False),  # 3 months
        ("ordinary", 300, True), ("ordinary", 400, False),  # 1 year
        ("serious", 1000, True), ("serious", 1120, False),  # 3 years
    ],
)  # fmt: skip
def test_a_record_past_its_maximum_publication_period_is_not_counted(hub, uscc, severity, age_days, counts):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    hub.violation(uscc, "GSJ", "P-9", severity=severity, decided=TODAY - dt.timedelta(days=age_days))
    verdict = {"minor": "GREEN", "ordinary": "AMBER", "serious": "RED"}[severity]
    result = _check(hub, uscc)
    assert result.verdict == (verdict if counts else "GREEN")
    assert any(r.rule == f"{severity}-violation" for r in result.reasons) is counts


def test_the_agency_stated_publication_end_replaces_the_default(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    # Serious, decided 2 months ago (3-year default) — but the agency ended publication yesterday.
    hub.violation(uscc, "GSJ", "P-5", severity="serious", decided=TODAY - dt.timedelta(days=60),
                  CF_GSJZQ=(TODAY - dt.timedelta(days=1)).isoformat())  # fmt: skip
    assert _check(hub, uscc).verdict == "GREEN"


@pytest.mark.parametrize(("published_until", "verdict"), [(0, "RED"), (-1, "GREEN")])
def test_a_penalty_counts_on_the_last_day_of_its_publication_and_not_the_day_after(hub, uscc, published_until,
                                                                                   verdict):  # fmt: skip
    today = today_in_china()  # the check's own today, not this machine's date
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    hub.violation(uscc, "GSJ", "P-6", severity="serious", decided=today - dt.timedelta(days=60),
                  CF_GSJZQ=(today + dt.timedelta(days=published_until)).isoformat())  # fmt: skip
    assert _check(hub, uscc).verdict == verdict


@pytest.mark.parametrize(("days_after_the_36_months", "red"), [(0, True), (-1, False)])
def test_the_bureaus_own_revocation_counts_for_36_months_to_the_day(hub, uscc, days_after_the_36_months, red):
    today = today_in_china()
    revoked_on = add_months(today, -36) + dt.timedelta(days=days_after_the_36_months)
    old = {"XK_XDR_SHXYM": uscc, "XK_JDRQ": "2020-01-02", "XK_YXQZ": "2020-01-02", "XK_YXQZI": "2030-12-31"}
    hub.grant(1, **old)
    hub.grant(1, **old, lifecycle="revoked", lifecycle_date=revoked_on.isoformat(), lifecycle_reason="违规")
    hub.pulled()
    result = _check(hub, uscc)
    assert (result.verdict == "RED") is red
    assert any(r.rule == "own-licence-revoked" for r in result.reasons) is red


def test_a_repair_counts_from_its_repair_date_in_the_verdict_and_the_history_alike(hub, uscc):
    """A check as of a day before the repair (evidence re-checked) still sees the penalty that counted then."""
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    repaired = TODAY - dt.timedelta(days=10)
    hub.violation(uscc, "SCJG", "P-1", severity="serious", decided=TODAY - dt.timedelta(days=60),
                  repair_status="repaired", repair_date=repaired.isoformat())  # fmt: skip
    for day, verdict, standing in ((repaired - dt.timedelta(days=1), "RED", "counts"), (repaired, "GREEN", "repaired")):
        noon_in_china = dt.datetime.combine(day, dt.time(4), tzinfo=dt.UTC)
        with session_scope(hub.engine) as session:
            company = find_company(session, uscc)
            result = run_check(session, company=company, case_id="C-1", actor="reviewer:wang", rules=load_rules(),
                               agencies=hub.runtime.registry, freshness_hours=24 * 365, now=noon_in_china)  # fmt: skip
            history = company_history(session, company, HistoryFilter(include_hidden=True), today=day)
        assert result.verdict == verdict
        assert [v.standing for v in history.violations] == [standing]


def test_hidden_records_stay_stored_and_an_auditor_can_list_them(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.violation(uscc, "SCJG", "R-1", repair_status="repaired", repair_date=TODAY.isoformat())
    hub.violation(uscc, "GSJ", "E-1", severity="minor", decided=TODAY - dt.timedelta(days=200))
    hub.violation(uscc, "XFZD", "C-1")
    with Session(hub.engine) as session:
        company = find_company(session, uscc)
        default = company_history(session, company)
        everything = company_history(session, company, HistoryFilter(include_hidden=True))
    assert [v.agency_record_id for v in default.violations] == ["C-1"] and default.hidden == 2
    assert {v.agency_record_id: v.standing for v in everything.violations} == {
        "R-1": "repaired", "E-1": "expired", "C-1": "counts"}  # fmt: skip


def test_an_agency_whose_last_pull_is_older_than_the_bound_is_named_stale(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled(hours_ago=1)
    hub.pulled(hours_ago=30, only=["XFZD"])  # bound is 24 h
    result = _check(hub, uscc)
    assert result.stale_agencies == ["XFZD"]
    assert result.verdict == "AMBER"  # no record against it, but missing data is not a clean record
    (reason,) = result.reasons
    assert (reason.rule, reason.agency) == ("stale-data", "XFZD") and "30 h" in reason.text


def test_a_never_pulled_agency_is_stale_too(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled(never=("GAFJ",))
    result = _check(hub, uscc)
    assert result.stale_agencies == ["GAFJ"]
    assert "never been pulled" in result.reasons[0].text


def test_a_revocation_is_red(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    hub.violation(uscc, "SCJG", "V-1", severity="serious", penalties=("吊销许可证件",))
    assert {r.rule for r in _check(hub, uscc).reasons} >= {"licence-revoked-penalty"}
    assert _check(hub, uscc).verdict == "RED"


def test_the_bureaus_own_revoked_licence_is_red(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.grant(1, XK_XDR_SHXYM=uscc, lifecycle="revoked", lifecycle_date=TODAY.isoformat(), lifecycle_reason="违规")
    hub.pulled()
    result = _check(hub, uscc)
    assert result.verdict == "RED" and result.reasons[0].rule == "own-licence-revoked"


@pytest.mark.parametrize("hub_on", ["hub", "pg_hub"])
def test_a_licence_revoked_and_then_cancelled_as_the_law_requires_is_still_red(request, hub_on, uscc):
    hub = request.getfixturevalue(hub_on)
    hub.grant(1, XK_XDR_SHXYM=uscc)
    revoked_on = TODAY - dt.timedelta(days=40)
    hub.grant(1, XK_XDR_SHXYM=uscc, lifecycle="revoked", lifecycle_date=revoked_on.isoformat(), lifecycle_reason="违规")
    hub.grant(1, XK_XDR_SHXYM=uscc, lifecycle="cancelled", lifecycle_date=TODAY.isoformat(),
              lifecycle_reason="吊销后依法注销")  # fmt: skip
    hub.pulled()
    result = _check(hub, uscc)
    assert result.verdict == "RED"
    assert [(r.rule, r.date) for r in result.reasons] == [("own-licence-revoked", revoked_on)]


def test_rules_per_approval_item(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    hub.violation(uscc, "SCJG", "F-1", severity="ordinary")
    assert _check(hub, uscc, item="NK-JS-002").verdict == "AMBER"
    assert _check(hub, uscc, item="NK-SC-001").verdict == "RED"  # food licence: market-supervision record blocks


def test_each_check_is_stored_with_its_inputs_and_audited_with_its_case(hub, uscc):
    hub.grant(1, XK_XDR_SHXYM=uscc)
    hub.pulled()
    hub.violation(uscc, "SCJG", "P-1")
    result = _check(hub, uscc, case="SP-2026-0815")
    with Session(hub.engine) as session:
        stored = session.get(ComplianceCheck, result.check_id)
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "review.check")).one()
    assert (stored.case_id, stored.verdict, stored.checked_by) == ("SP-2026-0815", "AMBER", "reviewer:wang")
    assert stored.inputs["violations"][0]["record"] == "P-1" and stored.inputs["rules_digest"]
    assert {f["code"] for f in stored.inputs["freshness"]} == set(hub.runtime.registry)
    assert (entry.actor, entry.detail["case"], entry.subject) == ("reviewer:wang", "SP-2026-0815", f"company:{uscc}")


@pytest.mark.parametrize(
    ("severity", "decided", "stated", "end"),
    [
        ("minor", dt.date(2026, 1, 31), None, dt.date(2026, 4, 30)),
        ("ordinary", dt.date(2024, 2, 29), None, dt.date(2025, 2, 28)),
        ("serious", dt.date(2026, 3, 1), None, dt.date(2029, 3, 1)),
        ("serious", dt.date(2026, 3, 1), dt.date(2027, 3, 1), dt.date(2027, 3, 1)),
    ],
)  # fmt: skip
def test_publication_end_table(severity, decided, stated, end):
    assert publication_end(severity, decided, stated) == end
    assert add_months(dt.date(2026, 12, 31), 2) == dt.date(2027, 2, 28)
