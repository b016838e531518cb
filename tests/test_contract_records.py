"""Canonical records that cannot be right are refused naming the record, field and reason; nothing is guessed.

Dates that contradict each other or lie in the future, a severity lighter than the penalty makes it,
control characters no store can hold, numbers sent where a date belongs.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from adapters.base import payload_digest
from contracts.fields import today_in_china
from contracts.records import LicenceGrant, Severity, ViolationRecord
from contracts.validation import parse_record
from hub.errors import ContractViolation
from tests.helpers import grant, make_uscc

AUTHORITY = "11120104MB1A20010F"
TODAY = today_in_china()


def violation(**overrides) -> dict:
    record = {
        "CF_XDR_MC": "天津测试1号有限公司", "CF_XDR_LB": "法人及非法人组织", "CF_XDR_SHXYM": make_uscc(1),
        "CF_WSH": "津南市监罚〔2026〕1号", "CF_WFXW": "未按规定经营", "CF_SY": "现场检查发现违规行为",
        "CF_YJ": "《行政处罚法》第二十八条", "CF_CFLB": ["警告"], "CF_NR": "警告", "CF_JDRQ": "2026-03-01",
        "CF_YXQ": "2027-03-01", "CF_CFJG": "市场监管局", "CF_CFJGDM": AUTHORITY, "CF_SJLY": "市场监管局",
        "CF_SJLYDM": AUTHORITY, "source_agency": "SCJG", "agency_record_id": "R-1",
    }  # fmt: skip
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not None}


def refusal(model, data: dict, **kw) -> list[tuple[str, str]]:
    with pytest.raises(ContractViolation) as refused:
        parse_record(model, data, record="R-1", **kw)
    assert {p.record for p in refused.value.problems} == {"R-1"}
    return [(p.field, p.reason) for p in refused.value.problems]


# --- dates that contradict each other -------------------------------------------------------------------


def test_a_publication_end_before_the_decision_is_refused_naming_both_dates():
    """An end before the decision would hide a live penalty from the day it is recorded (verdict GREEN)."""
    ((field, reason),) = refusal(ViolationRecord, violation(CF_JDRQ="2026-01-10", CF_GSJZQ="2025-12-31"))
    assert field == "CF_GSJZQ" and "2025-12-31" in reason and "CF_JDRQ 2026-01-10" in reason


def test_a_publication_end_on_the_decision_day_is_accepted():
    assert parse_record(ViolationRecord, violation(CF_GSJZQ="2026-03-01"), record="R-1").publication_end


def test_a_lifecycle_change_before_the_licence_was_granted_is_refused():
    ((field, reason),) = refusal(LicenceGrant, grant(1, lifecycle="revoked", lifecycle_date="2016-04-01",
                                                     lifecycle_reason="以欺骗手段取得"))  # fmt: skip
    assert field == "lifecycle_date" and "2016-04-01" in reason and "XK_JDRQ 2026-03-01" in reason


def test_a_repair_before_the_decision_is_refused():
    ((field, reason),) = refusal(ViolationRecord, violation(repair_status="repaired", repair_date="2019-01-01"))
    assert field == "repair_date" and "2019-01-01" in reason and "CF_JDRQ 2026-03-01" in reason


# --- dates in the future (today in China, a day's tolerance for clock skew) --------------------------------

FUTURE = [
    (LicenceGrant, lambda day: grant(1, XK_JDRQ=day, XK_YXQZ=day, XK_YXQZI="2099-12-31"), "XK_JDRQ"),
    (ViolationRecord, lambda day: violation(CF_JDRQ=day, CF_YXQ="2099-12-31"), "CF_JDRQ"),
    (ViolationRecord, lambda day: violation(repair_status="repaired", repair_date=day), "repair_date"),
]


@pytest.mark.parametrize(("model", "record", "field"), FUTURE)
def test_a_decision_or_repair_dated_after_tomorrow_in_china_is_refused(model, record, field):
    day = (TODAY + dt.timedelta(days=2)).isoformat()
    ((named, reason),) = refusal(model, record(day))
    assert named == field and f"{day} is in the future" in reason


@pytest.mark.parametrize(("model", "record", "field"), FUTURE)
def test_tomorrow_in_china_is_within_the_clock_skew_allowed(model, record, field):
    assert parse_record(model, record((TODAY + dt.timedelta(days=1)).isoformat()), record="R-1")


def test_the_day_validated_as_of_can_be_given():
    record = violation(CF_JDRQ="2026-03-01")
    assert parse_record(ViolationRecord, record, record="R-1", today=dt.date(2026, 2, 28))
    ((field, _),) = refusal(ViolationRecord, record, today=dt.date(2026, 2, 27))
    assert field == "CF_JDRQ"


# --- dates are dates, never numbers read as seconds since 1970 ------------------------------------------


@pytest.mark.parametrize(("sent", "said"), [
    (1772323200, "not a number"), (20260301, "not a number"), (1.5, "not a number"),
    ("20260301", "'20260301' is not a date written YYYY-MM-DD"),
    ("2026-03-01T08:30:00+08:00", "is not a date written YYYY-MM-DD"),  # a time that is not midnight
])  # fmt: skip
def test_a_date_sent_as_a_number_or_timestamp_is_refused_saying_so(sent, said):
    ((field, reason),) = refusal(LicenceGrant, grant(1, XK_YXQZI=sent))
    assert field == "XK_YXQZI" and said in reason


# --- severity agrees with the penalty, whichever name sent the penalty types ------------------------------


@pytest.mark.parametrize("key", ["CF_CFLB", "penalty_types"])
@pytest.mark.parametrize(("penalties", "severity"), [
    (["责令关闭"], Severity.SERIOUS), (["罚款", "吊销许可证件"], Severity.SERIOUS),
    (["罚款"], Severity.ORDINARY), (["警告"], Severity.MINOR),
])  # fmt: skip
def test_the_default_severity_comes_from_the_penalty_types_under_either_name(key, penalties, severity):
    data = {k: v for k, v in violation(CF_NR_FK="0.2").items() if k != "CF_CFLB"}
    assert parse_record(ViolationRecord, {**data, key: penalties}, record="R-1").severity == severity


@pytest.mark.parametrize("stated", ["ordinary", "minor"])
def test_a_serious_penalty_stated_lighter_is_kept_as_serious_not_refused(stated):
    """Refused, the closure would vanish from the verdict; kept as labelled, it would stop counting after 12 months."""
    record = violation(penalty_types=["责令关闭"], CF_CFLB=None, severity=stated)
    assert parse_record(ViolationRecord, record, record="R-1").severity == Severity.SERIOUS


@pytest.mark.parametrize(("sent", "kept"), [("2026-03-01T00:00:00", "2026-03-01"), ("2026-03-01 00:00:00", "2026-03-01"),
                                            ("2026-03-01T00:00:00+08:00", "2026-03-01"), ("2026-03-01T00:00Z", "2026-03-01")])
def test_a_date_exported_with_midnight_is_that_date(sent, kept):
    record = parse_record(ViolationRecord, violation(CF_JDRQ=sent), record="R-1")
    assert record.decision_date.isoformat() == kept


@pytest.mark.parametrize(("bad", "code"), [("\x7f", "U+007F"), ("\x85", "U+0085"), ("\u2028", "U+2028")])
def test_del_c1_controls_and_line_separators_are_refused_in_a_one_line_field(bad, code):
    ((field, reason),) = refusal(ViolationRecord, violation(CF_XDR_MC=f"天津{bad}测试"))
    assert field == "CF_XDR_MC" and code in reason


def test_an_amount_in_other_scripts_digits_is_refused():
    ((field, reason),) = refusal(ViolationRecord, violation(CF_NR_FK="٠.٢"))
    assert field == "CF_NR_FK" and "ASCII digits" in reason


@pytest.mark.parametrize(("penalties", "stated"), [(["罚款"], "minor"), (["警告"], "serious"), (["罚款"], "serious")])
def test_the_agency_may_class_a_lighter_penalty_itself(penalties, stated):
    record = violation(CF_CFLB=penalties, CF_NR_FK="0.2", severity=stated)
    assert parse_record(ViolationRecord, record, record="R-1").severity == stated


# --- text every store can hold --------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "field", "make"), [
    (LicenceGrant, "XK_XDR_MC", lambda text: grant(1, XK_XDR_MC=text)),
    (LicenceGrant, "XK_NR", lambda text: grant(1, XK_NR=text)),
    (LicenceGrant, "BZ", lambda text: grant(1, BZ=text)),
    (LicenceGrant, "XK_XKBH", lambda text: grant(1, XK_XKBH=text)),
    (LicenceGrant, "bureau_section", lambda text: grant(1, bureau_section=text)),
    (ViolationRecord, "CF_SY", lambda text: violation(CF_SY=text)),
    (ViolationRecord, "CF_WSH", lambda text: violation(CF_WSH=text)),
    (ViolationRecord, "agency_record_id", lambda text: violation(agency_record_id=text)),
])  # fmt: skip
@pytest.mark.parametrize(("bad", "said"), [
    ("\x00", "the control character U+0000"), ("\x1b", "the control character U+001B"),
    ("\ud800", "an unpaired UTF-16 surrogate U+D800"),
])  # fmt: skip
def test_nul_other_controls_and_lone_surrogates_are_refused_naming_the_field(model, field, make, bad, said):
    ((named, reason),) = refusal(model, make(f"天津{bad}测试"))
    assert named == field and said in reason and "at character 3" in reason


def test_a_lone_surrogate_from_json_intake_is_refused_not_a_crash_later():
    text = json.loads('"\\udc80abc"')  # what json.loads makes of an escaped half pair
    ((field, _),) = refusal(ViolationRecord, violation(CF_NR=text))
    assert field == "CF_NR"


def test_free_text_keeps_tabs_and_line_breaks_a_one_line_field_does_not():
    record = parse_record(ViolationRecord, violation(CF_SY="一、未公示\r\n二、\t逾期"), record="R-1")
    assert record.facts == "一、未公示\r\n二、\t逾期"
    ((field, reason),) = refusal(ViolationRecord, violation(CF_XDR_MC="天津\n测试"))
    assert field == "CF_XDR_MC" and "U+000A" in reason


def test_a_line_break_around_a_one_line_field_is_whitespace_stripped_as_before():
    """A CSV cell or JSON value ending in a line break was stripped and stored; it must not turn into a refusal."""
    record = parse_record(ViolationRecord, violation(CF_XDR_MC="\t天津测试1号有限公司\r\n"), record="R-1")
    assert record.subject_name == "天津测试1号有限公司"


# --- one amount, one form, one digest -------------------------------------------------------------------


@pytest.mark.parametrize(("sent", "kept"), [("0.20", "0.2"), ("0.2", "0.2"), ("20.000", "20"), ("-0", "0"),
                                            (Decimal("2E+1"), "20")])  # fmt: skip
def test_an_amount_is_kept_in_one_normal_form_so_its_digest_is_one(sent, kept):
    record = parse_record(ViolationRecord, violation(CF_CFLB=["罚款"], CF_NR_FK=sent), record="R-1")
    dumped = record.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["CF_NR_FK"] == kept
    same = parse_record(ViolationRecord, violation(CF_CFLB=["罚款"], CF_NR_FK=kept), record="R-1")
    assert payload_digest(dumped) == payload_digest(same.model_dump(mode="json", by_alias=True, exclude_none=True))


# --- identifiers -----------------------------------------------------------------------------------------


def test_a_full_width_registration_number_is_kept_in_ascii_so_it_links_to_its_company():
    record = parse_record(ViolationRecord, violation(CF_XDR_SHXYM=None, CF_XDR_GSZC="１２０１０４０００１２３４５６"),
                          record="R-1")  # fmt: skip
    assert record.reg_no == "120104000123456"


@pytest.mark.parametrize(("model", "make", "field"), [
    (LicenceGrant, lambda **kw: grant(1, **{f"XK_{k}": v for k, v in kw.items()}), "XK_XDR_SHXYM"),
    (ViolationRecord, lambda **kw: violation(**{f"CF_{k}": v for k, v in kw.items()}), "CF_XDR_SHXYM"),
])  # fmt: skip
def test_the_placeholder_code_stands_only_for_an_individual_business(model, make, field):
    """domain.md: 00000000000000000X is the placeholder for an individual business without a code."""
    placeholder = {"XDR_SHXYM": "00000000000000000X", "XDR_GSZC": "120104600123456"}
    assert parse_record(model, make(XDR_LB="个体工商户", **placeholder), record="R-1").uscc == "00000000000000000X"
    ((named, reason),) = refusal(model, make(XDR_LB="法人及非法人组织", **placeholder))
    assert named == field and "个体工商户" in reason
