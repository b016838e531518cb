"""REST adapter against the sandbox REST agencies, over real loopback sockets.

Deliveries: what each agency recorded is what the hub sent, field by field, and its receipt
carries the digest of it. Pulls: every pagination style walks all pages, survives a
partial last page and records that appear later, and each record maps to exactly the
penalty the agency holds — or is refused naming the field and the reason.
"""

from __future__ import annotations

import datetime as dt
import json
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import pytest

from adapters import AdapterContext, build_adapter
from adapters.base import Cursor, OutboundMessage, payload_digest
from adapters.rest import RestAdapter
from contracts.mapping import licence_to_native, native_to_violation
from contracts.records import LicenceGrant, PenaltyType
from contracts.registry import AgencySpec, load_registry
from contracts.uscc import org_check_char, uscc_check_char
from hub.errors import ConfigurationError, ContractViolation, FatalError, TransientError
from sandbox.core import Fault, Malformation
from sandbox.rest_agencies import RunningAgency, render_penalty, start_rest_agency

CODES = ["SCJG", "GAFJ", "JJZD"]
BUREAU, BUREAU_USCC = "天津市南开区行政审批局", "11120104MB01234578"


def make_uscc(n: int) -> str:
    org8 = f"{n:08d}"
    body = "91120104" + org8 + org_check_char(org8)
    return body + uscc_check_char(body)


def make_grant(n: int, **changes: object) -> LicenceGrant:
    uscc = make_uscc(n)
    data = {
        "XK_XDR_MC": f"天津南开测试{n}号有限公司", "XK_XDR_LB": "法人及非法人组织", "XK_XDR_SHXYM": uscc,
        "XK_XDR_GSZC": f"120104{n:09d}", "XK_XDR_ZZJG": uscc[8:17], "XK_FRDB": "张三",
        "XK_XKWS": "道路运输经营许可决定书", "XK_WSH": f"津南审批许字〔2026〕{n:04d}号", "XK_XKLB": "特许",
        "XK_XKZS": "道路运输经营许可证", "XK_XKBH": f"NK2026{n:06d}", "XK_NR": "普通货运",
        "XK_JDRQ": "2026-01-05", "XK_YXQZ": "2026-01-05", "XK_YXQZI": "2099-12-31",
        "XK_XKJG": BUREAU, "XK_XKJGDM": BUREAU_USCC, "XK_ZT": "有效", "XK_LYDW": BUREAU, "XK_LYDWDM": BUREAU_USCC,
        "BZ": "测试", "approval_item": "NK-JT-020", "approval_item_name": "道路运输经营许可",
        "bureau_section": "交通建设科", "industry": "道路运输",
    }  # fmt: skip
    data.update(changes)
    return LicenceGrant.model_validate(data)


@pytest.fixture(params=CODES)
def rest_agency(request) -> RunningAgency:
    agency = start_rest_agency(request.param, timeout_sleep=2.0)
    yield agency
    agency.stop()


def rest_spec(agency: RunningAgency, **transport: object) -> AgencySpec:
    spec = load_registry(overrides={agency.code: {"endpoint": agency.endpoint}})[agency.code]
    return spec.model_copy(update={"transport": {**spec.transport, **transport}})


def rest_adapter(agency: RunningAgency, spec: AgencySpec | None = None, **transport: object) -> RestAdapter:
    spec = spec or rest_spec(agency, **transport)
    context = AdapterContext(work_dir=Path("."), secret=agency.token, connect_timeout=2.0, read_timeout=10.0)
    return build_adapter(spec, context)


def messages_for(spec: AgencySpec, grants: list[LicenceGrant]) -> list[OutboundMessage]:
    return [
        OutboundMessage(f"msg-{spec.code}-{g.licence_no}", g.decision_no, licence_to_native(g, spec.licence_mapping))
        for g in grants
    ]


def pull_all(adapter: RestAdapter, cursor: Cursor = Cursor()) -> tuple[list, Cursor]:
    records = []
    while True:
        page = adapter.fetch(cursor)
        assert page.next_cursor >= cursor  # positions only move forward
        records += page.records
        cursor = page.next_cursor
        if not page.more:
            return records, cursor


# --- deliver ---------------------------------------------------------------------------
def test_delivered_licences_are_what_the_agency_recorded(rest_agency: RunningAgency) -> None:
    spec = rest_spec(rest_agency)
    grants = [make_grant(1), make_grant(2, XK_ZT="已变更", lifecycle="changed", lifecycle_date="2026-02-01",
                                       lifecycle_reason="经营范围变更"), make_grant(3)]  # fmt: skip
    messages = messages_for(spec, grants)
    with closing(rest_adapter(rest_agency, spec)) as adapter:
        receipts = adapter.deliver(messages)

    assert [r.message_id for r in receipts] == [m.message_id for m in messages]
    assert len({r.ack_id for r in receipts}) == 3
    for message, receipt in zip(messages, receipts, strict=True):
        recorded = rest_agency.book.received[message.message_id].payload
        for field, value in message.payload.items():
            assert recorded[field] == value, field
        assert set(recorded) == set(message.payload)
        assert receipt.digest == payload_digest(recorded) == message.digest
        assert not receipt.duplicate
        assert receipt.received_at.tzinfo is not None
    # every canonical item the agency's mapping names was sent (grant 2 has them all)
    assert set(spec.licence_mapping.fields.values()) - set(messages[1].payload) <= {
        spec.licence_mapping.fields[c] for c in ("XK_XDR_SWDJ", "XK_XDR_SYDW", "XK_XDR_SHZZ") if c in spec.licence_mapping.fields
    }


def test_each_agency_receives_its_own_dialect() -> None:
    specs = load_registry()
    grant = make_grant(4, lifecycle="changed", lifecycle_date="2026-02-01")
    scjg = licence_to_native(grant, specs["SCJG"].licence_mapping)
    gafj = licence_to_native(grant, specs["GAFJ"].licence_mapping)
    jjzd = licence_to_native(grant, specs["JJZD"].licence_mapping)
    assert (scjg["entName"], scjg["lifecycle"], scjg["validTo"]) == (grant.subject_name, "CHANGED", "2099-12-31")
    assert (gafj["xdr_lb"], gafj["xklb"], gafj["smzq"], gafj["xkjdrq"]) == ("2", "2", "02", "20260105")
    assert (jjzd["统一社会信用代码"], jjzd["许可状态"], jjzd["状态变更日期"]) == (grant.uscc, "变更", "2026年02月01日")


def test_resending_a_message_id_is_acknowledged_as_duplicate_and_held_once(rest_agency: RunningAgency) -> None:
    spec = rest_spec(rest_agency)
    messages = messages_for(spec, [make_grant(10), make_grant(11)])
    with closing(rest_adapter(rest_agency, spec)) as adapter:
        first = adapter.deliver(messages)
        again = adapter.deliver(messages)

    assert [r.duplicate for r in first] == [False, False]
    assert [r.duplicate for r in again] == [True, True]
    assert [r.ack_id for r in again] == [r.ack_id for r in first]
    assert [r.digest for r in again] == [m.digest for m in messages]
    assert len(rest_agency.book.received) == 2
    assert all(rest_agency.book.received[m.message_id].times_seen == 2 for m in messages)


def test_same_message_id_with_another_payload_is_refused(rest_agency: RunningAgency) -> None:
    spec = rest_spec(rest_agency)
    [message] = messages_for(spec, [make_grant(12)])
    altered = OutboundMessage(message.message_id, message.licence_key, {**message.payload, "extra": "x"})
    with closing(rest_adapter(rest_agency, spec)) as adapter:
        adapter.deliver([message])
        with pytest.raises(FatalError, match="409"):
            adapter.deliver([altered])
    assert rest_agency.book.received[message.message_id].payload == message.payload


# --- fetch -----------------------------------------------------------------------------
EXPECTED_PROBLEM = {
    Malformation.BAD_USCC: "CF_XDR_SHXYM",
    Malformation.MISSING_DECISION_NO: "CF_WSH",
    Malformation.BAD_DATE: "CF_JDRQ",
    Malformation.WRONG_UNIT: "CF_NR_FK",
}


def test_pulled_records_map_to_exactly_what_the_agency_holds() -> None:
    for code in CODES:
        agency = start_rest_agency(code, malformed_every=3)
        try:
            spec = rest_spec(agency, page_size=4)
            with closing(rest_adapter(agency, spec)) as adapter:
                adapter.deliver(messages_for(spec, [make_grant(n) for n in range(20, 30)]))
                records, cursor = pull_all(adapter)
            _check_against_book(agency, spec, records, cursor)
        finally:
            agency.stop()


def _check_against_book(agency: RunningAgency, spec: AgencySpec, records: list, cursor: Cursor) -> None:
    drafts = agency.book.penalties
    assert len(drafts) >= 12 and cursor.position == len(drafts)
    assert [r.ref for r in records] == [d.record_id for d in drafts]
    assert {d.malformation for d in drafts} >= set(Malformation)
    for draft, inbound in zip(drafts, records, strict=True):
        assert json.loads(inbound.raw, parse_float=Decimal) == inbound.native  # the exact text is kept
        if draft.malformation:
            with pytest.raises(ContractViolation) as refused:
                native_to_violation(inbound.native, spec.violation_mapping, agency_code=spec.code, record=inbound.ref)
            fields = [p.field for p in refused.value.problems]
            assert any(f.startswith(EXPECTED_PROBLEM[draft.malformation]) for f in fields), fields
            assert all(p.reason and p.record == draft.record_id for p in refused.value.problems)
            continue
        record = native_to_violation(inbound.native, spec.violation_mapping, agency_code=spec.code, record=inbound.ref)
        assert (record.subject_name, record.uscc, record.decision_no) == (draft.subject_name, draft.uscc, draft.decision_no)
        assert record.penalty_types == tuple(PenaltyType(p) for p in draft.penalties)
        assert record.fine == draft.fine_wanyuan and (record.fine is None or isinstance(record.fine, Decimal))
        assert record.decision_date == dt.date.fromisoformat(draft.decision_date)
        assert record.validity_end == dt.date.fromisoformat(draft.validity_end)
        assert (record.violation_type, record.facts, record.legal_basis, record.content) == (
            draft.violation_type, draft.facts, draft.legal_basis, draft.content)  # fmt: skip
        assert (record.authority, record.authority_uscc) == (agency.dialect.name, agency.dialect.uscc)
        assert (record.source_agency, record.agency_record_id) == (spec.code, draft.record_id)


def test_a_fine_in_yuan_becomes_exact_wanyuan() -> None:
    agency = start_rest_agency("SCJG", malformed_every=0)
    try:
        agency.book.add_penalty(subject_name="天津甲公司", uscc=make_uscc(40), penalties=["罚款"],
                                content="罚款", fine_wanyuan=Decimal("1.2345"))  # fmt: skip
        spec = rest_spec(agency)
        with closing(rest_adapter(agency, spec)) as adapter:
            [inbound] = adapter.fetch(Cursor()).records
        assert '"penAm": 12345' in inbound.raw
        record = native_to_violation(inbound.native, spec.violation_mapping, agency_code="SCJG", record="x")
        assert record.fine == Decimal("1.2345")
    finally:
        agency.stop()


def _add_penalties(agency: RunningAgency, first: int, count: int) -> None:
    for n in range(first, first + count):
        agency.book.add_penalty(subject_name=f"天津测试{n}号有限公司", uscc=make_uscc(n), penalties=["警告"], content="警告")


def test_partial_last_page_then_records_that_appear_later(rest_agency: RunningAgency) -> None:
    _add_penalties(rest_agency, 100, 10)  # pages of 4: 4, 4, then a partial 2
    with closing(rest_adapter(rest_agency, page_size=4)) as adapter:
        records, cursor = pull_all(adapter)
        assert cursor.position == 10
        quiet = adapter.fetch(cursor)
        assert (quiet.records, quiet.more, quiet.next_cursor.position) == ([], False, 10)

        _add_penalties(rest_agency, 110, 5)  # fills the partial page and starts another
        later, cursor = pull_all(adapter, quiet.next_cursor)
    seqs = [int(r.ref.rsplit("-", 1)[1]) for r in records + later]
    assert seqs == list(range(1, 16))
    assert cursor.position == 15


def test_a_repeated_page_yields_no_record_twice(rest_agency: RunningAgency) -> None:
    _add_penalties(rest_agency, 200, 10)
    with closing(rest_adapter(rest_agency, page_size=4)) as adapter:
        first = adapter.fetch(Cursor())
        rest_agency.book.inject(Fault.REPEAT)
        repeated = adapter.fetch(first.next_cursor)  # the agency serves records 1-4 again
        records, _ = pull_all(adapter, repeated.next_cursor)
    assert repeated.records == [] and repeated.next_cursor.position == 4 and repeated.more
    assert [r.ref for r in first.records + records] == [d.record_id for d in rest_agency.book.penalties]


def test_a_failed_fetch_returns_nothing_and_the_same_cursor_fetches_it_all_later(rest_agency: RunningAgency) -> None:
    _add_penalties(rest_agency, 300, 6)
    with closing(rest_adapter(rest_agency, page_size=4)) as adapter:
        first = adapter.fetch(Cursor())
        for fault in (Fault.DROP, Fault.ERROR_500, Fault.RATE_LIMIT):
            rest_agency.book.inject(fault)
            with pytest.raises(TransientError):  # worth retrying, and nothing of a page handed out
                adapter.fetch(first.next_cursor)
        page = adapter.fetch(first.next_cursor)
    assert [r.ref for r in page.records] == [d.record_id for d in rest_agency.book.penalties[4:]]


# --- probe and configuration -----------------------------------------------------------
def test_probe_reports_up_and_down(rest_agency: RunningAgency) -> None:
    adapter = rest_adapter(rest_agency)
    assert adapter.probe().ok
    rest_agency.stop()
    health = adapter.probe()
    adapter.close()
    assert not health.ok and "TransientError" in health.detail


@pytest.mark.parametrize(
    ("transport", "secret", "needle"),
    [
        ({"auth": "bearer"}, None, "token"),
        ({"auth": "mtls"}, "x", "client_cert"),
        ({"client_cert": "/etc/hub/pki/hub/client.pem"}, "x", "client_key"),
        ({"pagination": "scroll"}, "x", "pagination"),
        ({"page_sise": 10}, "x", "page_sise"),
        ({"token": "in-the-file"}, "x", "must not hold the token"),
    ],
)
def test_bad_rest_tables_are_configuration_errors(transport: dict, secret: str | None, needle: str) -> None:
    spec = load_registry()["SCJG"]
    spec = spec.model_copy(update={"transport": {**spec.transport, **transport}})
    with pytest.raises(ConfigurationError, match=needle):
        build_adapter(spec, AdapterContext(work_dir=Path("."), secret=secret))


def test_the_rest_adapter_is_an_agency_adapter() -> None:
    from adapters import rest
    from adapters.base import AgencyAdapter

    assert all(hasattr(rest, name) for name in rest.__all__)
    adapter = build_adapter(load_registry()["GAFJ"], AdapterContext(work_dir=Path(".")))
    assert isinstance(adapter, AgencyAdapter) and adapter.code == "GAFJ"
    adapter.close()


@pytest.mark.parametrize(("content_type", "encode"), [
    ("text/plain", lambda text: text.encode("utf-8")),  # requests would read this as ISO-8859-1
    ("text/json; charset=GBK", lambda text: text.encode("gbk")),
    ("application/json", lambda text: b"\xef\xbb\xbf" + text.encode("utf-8")),  # with a byte order mark
])  # fmt: skip
def test_a_page_is_read_in_the_charset_the_agency_declares_else_utf8(content_type, encode) -> None:
    agency = start_rest_agency("SCJG")
    try:
        draft = agency.book.add_penalty(subject_name="天津市南开区鑫磊商贸有限公司", uscc=make_uscc(77))
        page = {"data": [render_penalty(draft, agency.dialect)], "hasMore": False}
        agency.queue_response(200, encode(json.dumps(page, ensure_ascii=False)), {"Content-Type": content_type})
        with closing(rest_adapter(agency)) as adapter:
            [inbound] = adapter.fetch(Cursor()).records
    finally:
        agency.stop()
    assert inbound.native["entName"] == "天津市南开区鑫磊商贸有限公司"
