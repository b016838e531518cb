"""Native penalty records of odd shapes are refused naming the field, or read as they plainly say; never a crash.

A crash in mapping is worse than a refusal: the page is not stored, and the pull stops on the same
record at every retry. The records are the sandbox 公安分局's (GAFJ: dates written 20260301,
penalty kinds as a comma-separated list).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from contracts.mapping import native_to_violation
from contracts.records import PenaltyType
from contracts.registry import load_registry
from hub.errors import ContractViolation
from sandbox.core import AgencyBook
from sandbox.rest_agencies import render_penalty
from sandbox.rest_dialects import REST_DIALECTS
from tests.helpers import make_uscc

GAFJ = REST_DIALECTS["GAFJ"]


def gafj_record(**native) -> dict:
    book = AgencyBook(code="GAFJ", name=GAFJ.name, uscc=GAFJ.uscc, malformed_every=0)
    draft = book.add_penalty(subject_name="天津测试5号有限公司", uscc=make_uscc(5), penalties=["警告"], content="警告")
    return {**render_penalty(draft, GAFJ), **native}


def mapped(native: dict):
    spec = load_registry()["GAFJ"]
    return native_to_violation(native, spec.violation_mapping, agency_code="GAFJ", record="GAFJ-P-1")


def test_a_gafj_record_as_the_agency_writes_it_maps():
    record = mapped(gafj_record())
    assert record.penalty_types == (PenaltyType("警告"),) and isinstance(record.decision_date, dt.date)


def test_penalty_kinds_sent_as_a_json_list_with_a_null_are_read_without_the_null():
    assert mapped(gafj_record(cfzl=["警告", None])).penalty_types == (PenaltyType("警告"),)


def test_penalty_kinds_sent_as_a_json_list_with_a_number_are_refused_naming_the_field():
    with pytest.raises(ContractViolation) as refused:
        mapped(gafj_record(cfzl=["警告", 7]))
    (problem,) = refused.value.problems
    assert (problem.record, problem.field) == ("GAFJ-P-1", "CF_CFLB[1]") and "Input should be '警告'" in problem.reason


@pytest.mark.parametrize("written", ["2026111", "202615", "2026 0101"])
def test_a_compact_date_not_written_in_full_is_refused_not_guessed(written):
    with pytest.raises(ContractViolation) as refused:
        mapped(gafj_record(cfjdrq=written))
    (problem,) = [p for p in refused.value.problems if "CF_JDRQ" in p.field]
    assert problem.record == "GAFJ-P-1" and f"{written!r} is not a date in the format(s) %Y%m%d" in problem.reason


def test_a_compact_date_written_in_full_is_read():
    assert mapped(gafj_record(cfjdrq="20260111")).decision_date == dt.date(2026, 1, 11)


@pytest.mark.parametrize(("written", "wanyuan"), [
    ("2,000", Decimal("0.2")), ("1,234,500", Decimal("123.45")), ("12,000.50", Decimal("1.20005")),
    ("１２，０００", Decimal("1.2")), ("2000", Decimal("0.2")),
])  # fmt: skip
def test_a_fine_with_thousands_separators_is_read_as_written(written, wanyuan):
    assert mapped(gafj_record(cfzl="罚款", fkje=written)).fine == wanyuan


@pytest.mark.parametrize("written", ["1,2,3", "0,5", "12,00", "1,0000", ",500", "1,000,", "1，00"])
def test_a_comma_that_is_no_thousands_separator_is_refused_not_dropped(written):
    """'1,2,3' was read as 123 yuan and a clerk's decimal comma '0,5' as 5: refused, naming the value."""
    with pytest.raises(ContractViolation) as refused:
        mapped(gafj_record(cfzl="罚款", fkje=written))
    (problem,) = refused.value.problems
    assert problem.field == "CF_NR_FK (fkje)" and repr(written) in problem.reason and "thousands" in problem.reason


@pytest.mark.parametrize("sent", [17, 17.0, "17", " 17 "])
def test_a_record_id_sent_as_a_number_is_one_id_however_it_is_written(sent):
    """A JSON 17 and 17.0 must name one record, not two."""
    assert mapped(gafj_record(cfbh=sent)).agency_record_id == "17"


@pytest.mark.parametrize("sent", [17.5, True, 2.0**60])
def test_a_record_id_that_is_no_whole_number_is_refused(sent):
    with pytest.raises(ContractViolation) as refused:
        mapped(gafj_record(cfbh=sent))
    (problem,) = refused.value.problems
    assert problem.field == "agency_record_id (cfbh)" and "not a record id" in problem.reason
