"""SOAP adapter against the sandbox GSJ and DSJ agencies, over real sockets on 127.0.0.1.

The agencies are independent systems (sandbox/soap_agencies.py): what they record and what
they serve is compared with what the hub sent and what the hub's mapping makes of it.
Hostile and broken peers are faked at the socket with a tiny canned-response server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from adapters import AdapterContext, build_adapter
from adapters.base import Cursor, OutboundMessage, payload_digest
from adapters.soap import SoapAdapter, SoapConfig, from_spec, reset_clients
from contracts.mapping import licence_to_native, native_to_violation
from contracts.records import LicenceGrant
from contracts.registry import AgencySpec, load_registry
from contracts.uscc import org_check_char, uscc_check_char
from hub.errors import ConfigurationError, ContractViolation, FatalError, RefusedInput, TransientError
from sandbox.core import Fault, LoopbackHTTPServer, Malformation
from sandbox.soap_agencies import default_book, start_soap_agency

CODES = ["GSJ", "DSJ"]
APPROVAL_BUREAU_USCC = "11120104MB0007309E"
SLOW = 3.0  # how long the sandbox holds a TIMEOUT request; the adapter's read timeout is 1s


def soap_uscc(n: int) -> str:
    body = f"91120104{n:08d}"
    body += org_check_char(body[8:16])
    return body + uscc_check_char(body)


def soap_grant(n: int) -> LicenceGrant:
    return LicenceGrant.model_validate({
        "XK_XDR_MC": f"天津南开测试{n}号有限公司", "XK_XDR_LB": "法人及非法人组织", "XK_XDR_SHXYM": soap_uscc(n),
        "XK_FRDB": "张三", "XK_XKWS": "食品经营许可决定书", "XK_WSH": f"津南审批许〔2026〕{n:04d}号",
        "XK_XKLB": "普通", "XK_XKZS": "食品经营许可证", "XK_XKBH": f"JY11201040{n:05d}",
        "XK_NR": "食品销售经营者（预包装食品销售）", "XK_JDRQ": "2026-03-01", "XK_YXQZ": "2026-03-01",
        "XK_YXQZI": "2099-12-31", "XK_XKJG": "天津市南开区行政审批局", "XK_XKJGDM": APPROVAL_BUREAU_USCC,
        "XK_LYDW": "天津市南开区行政审批局", "XK_LYDWDM": APPROVAL_BUREAU_USCC,
        "approval_item": "SPJY-001", "bureau_section": "市场准入科",
    })  # fmt: skip


def soap_spec(code: str, endpoint: str, **transport: object) -> AgencySpec:
    """The agency's data file at ``endpoint``; WS-Security (DSJ's) only when ``wsse=`` is passed.

    The sandbox agencies here check no WS-Security, so the data file's ``[soap.wsse]`` and the
    password reference are left out unless asked for (the TLS files come from each test's context).
    """
    spec = load_registry(overrides={code: {"endpoint": endpoint}})[code]
    base = {k: v for k, v in spec.transport.items() if k != "wsse"}
    update: dict[str, object] = {"transport": {**base, **transport}}
    if "wsse" not in transport:
        update["credentials"] = None
    return spec.model_copy(update=update)


def soap_adapter(spec: AgencySpec, tmp_path: Path) -> SoapAdapter:
    context = AdapterContext(work_dir=tmp_path, connect_timeout=1.0, read_timeout=1.0)
    return build_adapter(spec, context)  # the hub's own door, not a private constructor


def soap_messages(spec: AgencySpec, numbers: range) -> list[OutboundMessage]:
    return [
        OutboundMessage(f"{spec.code}-msg-{n}", f"津南审批许〔2026〕{n:04d}号",
                        licence_to_native(soap_grant(n), spec.licence_mapping))  # fmt: skip
        for n in numbers
    ]


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    reset_clients()


@pytest.fixture(params=CODES)
def soap_agency(request):
    agency = start_soap_agency(request.param, timeout_seconds=SLOW)
    yield agency
    agency.stop()


# --- delivery -------------------------------------------------------------------------------
def test_delivered_licence_is_recorded_field_by_field_with_matching_digest(soap_agency, tmp_path):
    spec = soap_spec(soap_agency.code, soap_agency.endpoint)
    adapter = soap_adapter(spec, tmp_path)
    messages = soap_messages(spec, range(1, 4))

    receipts = adapter.deliver(messages)

    assert [r.message_id for r in receipts] == [m.message_id for m in messages]
    for message, receipt in zip(messages, receipts, strict=True):
        recorded = soap_agency.book.received[message.message_id].payload
        assert recorded == message.payload
        assert receipt.digest == payload_digest(message.payload)
        assert receipt.ack_id.startswith(f"{soap_agency.code}-ACK-")
        assert receipt.received_at.tzinfo is not None and not receipt.duplicate
    # a nested field really travelled nested: the agency's record is keyed by element path
    name_path = "party.name" if soap_agency.code == "GSJ" else "xiangDuiRen.mingCheng"
    assert soap_agency.book.received[messages[0].message_id].payload[name_path] == "天津南开测试1号有限公司"


def test_resend_with_same_message_id_is_a_duplicate_recorded_once(soap_agency, tmp_path):
    spec = soap_spec(soap_agency.code, soap_agency.endpoint)
    adapter = soap_adapter(spec, tmp_path)
    [message] = soap_messages(spec, range(7, 8))

    first = adapter.deliver([message])[0]
    again = adapter.deliver([message])[0]

    assert again.duplicate and not first.duplicate
    assert again.ack_id == first.ack_id and again.digest == first.digest
    assert len(soap_agency.book.licences()) == 1
    assert soap_agency.book.received[message.message_id].times_seen == 2


# --- pulling --------------------------------------------------------------------------------
@pytest.fixture(params=CODES)
def busy_agency(request):
    """An agency holding licences of eight companies, every second invented penalty malformed."""
    book = default_book(request.param, malformed_every=2)
    agency = start_soap_agency(request.param, book=book)
    spec = soap_spec(agency.code, agency.endpoint)
    for message in soap_messages(spec, range(1, 9)):
        book.receive(message.message_id, message.payload)
    yield agency
    agency.stop()


def _pull_all(adapter: SoapAdapter, after: Cursor) -> tuple[list, Cursor, int]:
    records, cursor, pages = [], after, 0
    while True:
        page = adapter.fetch(cursor)
        pages += 1
        assert page.next_cursor >= cursor
        records.extend(page.records)
        cursor = page.next_cursor
        if not page.more:
            return records, cursor, pages


def test_fetch_reads_every_page_after_a_sequence_number(busy_agency, tmp_path):
    penalties = busy_agency.book.penalties
    assert len(penalties) > 9  # enough for several pages of four
    adapter = soap_adapter(soap_spec(busy_agency.code, busy_agency.endpoint, page_size=4), tmp_path)

    records, cursor, pages = _pull_all(adapter, Cursor())
    assert [r.ref for r in records] == [p.record_id for p in penalties]
    assert cursor.position == len(penalties) and pages >= 3

    later, cursor_later, _ = _pull_all(adapter, Cursor(position=5))
    assert [r.ref for r in later] == [p.record_id for p in penalties[5:]]
    assert cursor_later == cursor
    assert adapter.fetch(cursor).records == []  # nothing new: the cursor stays where it is


def test_native_records_map_to_what_the_agency_holds(busy_agency, tmp_path):
    spec = soap_spec(busy_agency.code, busy_agency.endpoint, page_size=1000)
    records, _, _ = _pull_all(soap_adapter(spec, tmp_path), Cursor())
    drafts = {d.record_id: d for d in busy_agency.book.penalties}
    seen_malformations = set()
    for record in records:
        draft = drafts[record.ref]
        assert all(not isinstance(v, (dict, list)) for v in record.native.values())  # flat: a key per leaf
        assert record.ref in record.raw and draft.subject_name in record.raw
        if draft.malformation is not None:
            seen_malformations.add(draft.malformation)
            continue
        violation = native_to_violation(record.native, spec.violation_mapping, agency_code=spec.code,
                                        record=record.ref)  # fmt: skip
        assert violation.subject_name == draft.subject_name
        assert violation.uscc == draft.uscc
        assert violation.decision_no == draft.decision_no
        assert violation.violation_type == draft.violation_type
        assert violation.facts == draft.facts and violation.legal_basis == draft.legal_basis
        assert [p.value for p in violation.penalty_types] == draft.penalties
        assert violation.content == draft.content
        assert violation.fine == draft.fine_wanyuan
        assert violation.decision_date.isoformat() == draft.decision_date
        assert violation.validity_end.isoformat() == draft.validity_end
        assert violation.agency_record_id == draft.record_id and violation.source_agency == spec.code
        assert violation.authority == spec.violation_mapping.constants["CF_CFJG"]
    assert seen_malformations == set(Malformation)


@pytest.mark.parametrize(
    ("malformation", "field", "reason"),
    [
        (Malformation.BAD_USCC, "CF_XDR_SHXYM", "check digit"),
        (Malformation.MISSING_DECISION_NO, "CF_WSH", "required"),
        (Malformation.BAD_DATE, "CF_JDRQ", "not a date"),
        (Malformation.WRONG_UNIT, "CF_NR_FK", "wrong unit"),
    ],
)
@pytest.mark.parametrize("code", CODES)
def test_malformed_record_names_its_field_and_reason(code, malformation, field, reason, tmp_path):
    book = default_book(code, malformed_every=0)
    draft = book.add_penalty(subject_name="天津南开违规有限公司", uscc=soap_uscc(99), penalties=["罚款"],
                             content="罚款", fine_wanyuan=Decimal("0.5"), malformation=malformation)  # fmt: skip
    if malformation == Malformation.BAD_USCC:
        draft.uscc = draft.uscc[:-1] + ("1" if draft.uscc[-1] != "1" else "2")
    elif malformation == Malformation.MISSING_DECISION_NO:
        draft.decision_no = ""
    elif malformation == Malformation.BAD_DATE:
        draft.decision_date = "2026-13-45"
    agency = start_soap_agency(code, book=book)
    try:
        spec = soap_spec(code, agency.endpoint)
        [record] = soap_adapter(spec, tmp_path).fetch(Cursor()).records
    finally:
        agency.stop()
    with pytest.raises(ContractViolation) as caught:
        native_to_violation(record.native, spec.violation_mapping, agency_code=code, record=record.ref)
    problems = [p for p in caught.value.problems if p.field.startswith(field)]
    assert problems, caught.value.problems
    assert reason in problems[0].reason and problems[0].record == draft.record_id


def test_repeated_page_never_moves_the_cursor_back(busy_agency, tmp_path):
    adapter = soap_adapter(soap_spec(busy_agency.code, busy_agency.endpoint, page_size=3), tmp_path)
    first = adapter.fetch(Cursor())
    busy_agency.book.inject(Fault.REPEAT)

    repeated = adapter.fetch(first.next_cursor)  # the agency serves page one again
    assert repeated.records == [] and repeated.next_cursor == first.next_cursor and repeated.more

    second = adapter.fetch(repeated.next_cursor)
    assert [r.ref for r in second.records] == [p.record_id for p in busy_agency.book.penalties[3:6]]


def test_probe_reports_a_live_agency_and_a_dead_one(soap_agency, tmp_path):
    spec = soap_spec(soap_agency.code, soap_agency.endpoint)
    assert soap_adapter(spec, tmp_path).probe().ok
    dead = soap_adapter(soap_spec(soap_agency.code, f"http://127.0.0.1:{_closed_port()}/x"), tmp_path).probe()
    assert not dead.ok and "ConnectionError" in dead.detail


# --- configuration --------------------------------------------------------------------------
def test_config_errors_name_the_agency_and_the_problem(tmp_path):
    spec = soap_spec("GSJ", "http://127.0.0.1:9/x", wsdl="missing.wsdl")
    with pytest.raises(ConfigurationError, match="GSJ.*missing.wsdl"):
        soap_adapter(spec, tmp_path)
    with pytest.raises(ConfigurationError, match=r"\[soap\].*page_size"):
        soap_adapter(soap_spec("GSJ", "http://127.0.0.1:9/x", page_size=0), tmp_path)
    with pytest.raises(ConfigurationError, match="binding"):
        soap_adapter(soap_spec("GSJ", "http://127.0.0.1:9/x", binding="NoSuchBinding"), tmp_path)


def test_a_field_path_missing_from_the_wsdl_is_a_configuration_error(soap_agency, tmp_path):
    spec = soap_spec(soap_agency.code, soap_agency.endpoint)
    adapter = soap_adapter(spec, tmp_path)
    [message] = soap_messages(spec, range(1, 2))
    wrong = OutboundMessage(message.message_id, message.licence_key, {**message.payload, "party.nickname": "x"})
    with pytest.raises(ConfigurationError, match="does not fit the WSDL"):
        adapter.deliver([wrong])
    assert soap_agency.book.licences() == []


def test_one_zeep_client_per_wsdl_and_endpoint(soap_agency, tmp_path):
    spec = soap_spec(soap_agency.code, soap_agency.endpoint)
    context = AdapterContext(work_dir=tmp_path)
    assert from_spec(spec, context)._client is from_spec(spec, context)._client
    config = SoapConfig.model_validate({**spec.transport, "code": spec.code, "endpoint": soap_agency.endpoint + "/"})
    assert SoapAdapter(config)._client is not from_spec(spec, context)._client


# --- errors: one table ------------------------------------------------------------------------
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
<soap:Body><x>&lol3;</x></soap:Body></soap:Envelope>"""
XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/hostname">]>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">
<soap:Body><x>&xxe;</x></soap:Body></soap:Envelope>"""
OFF_CONTRACT = b"""<?xml version="1.0"?>
<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>
<surprise xmlns="urn:nobody">1</surprise></soap:Body></soap:Envelope>"""


OFF_CONTRACT_PEER = (200, OFF_CONTRACT, {})


class _Canned(BaseHTTPRequestHandler):
    """A broken or hostile peer: answers every POST with the server's canned response."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body, headers = self.server.canned
        self.send_response(status)
        for key, value in {"Content-Type": "text/xml", **headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


class _CannedServer(LoopbackHTTPServer):
    canned: tuple[int, bytes, dict[str, str]]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ERROR_TABLE = [
    # id, peer, operation, expected error, retry_after
    ("client-fault-replay", "replay", "deliver", FatalError, None),
    ("server-fault", Fault.ERROR_500, "deliver", TransientError, None),
    ("server-fault-on-pull", Fault.ERROR_500, "fetch", TransientError, None),
    ("429-retry-after", Fault.RATE_LIMIT, "deliver", TransientError, 7.0),
    ("429-retry-after-pull", Fault.RATE_LIMIT, "fetch", TransientError, 7.0),
    ("dropped-connection", Fault.DROP, "deliver", TransientError, None),
    ("timeout", Fault.TIMEOUT, "fetch", TransientError, None),
    ("connection-refused", "refused", "deliver", TransientError, None),
    ("500-html", (500, b"<html>oops</html>", {"Content-Type": "text/html"}), "fetch", TransientError, None),
    ("503-retry-after", (503, b"busy", {"Retry-After": "12"}), "deliver", TransientError, 12.0),
    ("404", (404, b"", {}), "deliver", FatalError, None),
    ("403-html", (403, b"<html>forbidden</html>", {}), "fetch", FatalError, None),
    ("garbage-xml-pull", (200, b"<<not xml", {}), "fetch", RefusedInput, None),
    ("garbage-xml-push", (200, b"<<not xml", {}), "deliver", FatalError, None),
    ("billion-laughs-pull", (200, BILLION_LAUGHS, {}), "fetch", RefusedInput, None),
    ("billion-laughs-push", (200, BILLION_LAUGHS, {}), "deliver", FatalError, None),
    ("xxe-pull", (200, XXE, {}), "fetch", RefusedInput, None),
    ("off-contract-response", OFF_CONTRACT_PEER, "fetch", FatalError, None),
]


@pytest.mark.parametrize(("peer", "operation", "expected", "retry_after"), [row[1:] for row in ERROR_TABLE],
                         ids=[row[0] for row in ERROR_TABLE])  # fmt: skip
def test_error_table(peer, operation, expected, retry_after, tmp_path):
    book = default_book("GSJ")
    agency = start_soap_agency("GSJ", book=book, timeout_seconds=SLOW)
    canned = None
    try:
        endpoint = agency.endpoint
        if peer == "refused":
            endpoint = f"http://127.0.0.1:{_closed_port()}/gsj/ws/LicenceExchange"
        elif isinstance(peer, tuple):
            canned = _CannedServer(_Canned).start()
            canned.canned = peer
            endpoint = canned.url + "/gsj/ws/LicenceExchange"
        elif isinstance(peer, Fault):
            book.inject(peer)
        spec = soap_spec("GSJ", endpoint)
        adapter = soap_adapter(spec, tmp_path)
        [message] = soap_messages(spec, range(1, 2))
        if peer == "replay":
            adapter.deliver([message])
            message = OutboundMessage(message.message_id, message.licence_key, {**message.payload, "remarks": "改"})
        with pytest.raises(expected) as caught:
            adapter.deliver([message]) if operation == "deliver" else adapter.fetch(Cursor())
    finally:
        agency.stop()
        if canned is not None:
            canned.stop()
    assert type(caught.value) is expected
    assert "GSJ" in str(caught.value)
    if peer is not OFF_CONTRACT_PEER:  # third-party errors keep their cause; that one is our own finding
        assert caught.value.__cause__ is not None
    assert getattr(caught.value, "retry_after", None) == retry_after
    if peer != "replay":
        assert book.licences() == []  # nothing half-stored at the agency either
    assert "lollollol" not in str(caught.value)


# --- the sandbox refuses hostile requests -----------------------------------------------------
def _licence_request(message_id: str) -> str:
    return f"""<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"
  xmlns:g="urn:shenguan:gsj:licence-exchange:v1"><soap:Body><g:ReceiveLicenceRequest>
  <g:messageId>{message_id}</g:messageId><g:licence><g:party><g:name>某公司</g:name></g:party>
  <g:decision><g:documentName>d</g:documentName><g:documentNo>n</g:documentNo><g:category>ordinary</g:category>
  <g:content>c</g:content><g:decisionDate>2026-01-01</g:decisionDate><g:validFrom>2026-01-01</g:validFrom>
  <g:validTo>2027-01-01</g:validTo></g:decision><g:authority><g:name>a</g:name><g:creditCode>x</g:creditCode>
  </g:authority></g:licence></g:ReceiveLicenceRequest></soap:Body></soap:Envelope>"""


@pytest.mark.parametrize(
    ("doctype", "message_id"),
    [
        ('<!DOCTYPE r [<!ENTITY xxe SYSTEM "file://{secret}">]>', "&xxe;"),
        ('<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>', "&b;"),
        ("", "<![CDATA[ok]]><unclosed>"),
    ],
    ids=["xxe-local-file", "entity-expansion", "not-well-formed"],
)
def test_sandbox_refuses_hostile_requests_with_a_client_fault(doctype, message_id, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-PAYROLL", encoding="utf-8")
    agency = start_soap_agency("GSJ")
    try:
        body = '<?xml version="1.0" encoding="utf-8"?>' + doctype.format(secret=secret) + _licence_request(message_id)
        response = requests.post(agency.endpoint, data=body.encode("utf-8"), timeout=5,
                                 headers={"Content-Type": "text/xml; charset=utf-8"})  # fmt: skip
    finally:
        agency.stop()
    assert response.status_code == 500
    assert b"<faultcode>soap:Client</faultcode>" in response.content
    assert b"TOP-SECRET" not in response.content
    assert agency.book.licences() == []


def test_sandbox_serves_its_wsdl_with_its_own_address(soap_agency):
    response = requests.get(soap_agency.wsdl_url, timeout=5)
    assert response.status_code == 200
    assert f'location="{soap_agency.endpoint}"'.encode() in response.content
    assert requests.get(soap_agency.endpoint + "?nope", timeout=5).status_code == 404


def test_sandbox_answers_unknown_operations_and_bad_numbers_with_client_faults():
    agency = start_soap_agency("DSJ")
    ns = "http://dsj.nankai.tj.gov.cn/jiaohuan/v2"
    try:
        bodies = [
            f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><d:shanChu xmlns:d="{ns}"/>'
            "</s:Body></s:Envelope>",
            f'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><d:chaXunChuFa xmlns:d="{ns}">'
            "<d:qiShiXuHao>abc</d:qiShiXuHao><d:zuiDaTiaoShu>5</d:zuiDaTiaoShu></d:chaXunChuFa></s:Body></s:Envelope>",
        ]
        answers = [requests.post(agency.endpoint, data=b.encode(), timeout=5) for b in bodies]
    finally:
        agency.stop()
    assert [a.status_code for a in answers] == [500, 500]
    assert all(b"soap:Client" in a.content for a in answers)


@pytest.mark.parametrize(("served", "jump"), [([1, None, 3, 4], None), ([1, None, 3, 5], "from 3 to 5")])
def test_an_unnumbered_item_fills_only_the_gap_right_after_it(tmp_path, served, jump):
    """Refused for lack of a number, it may be the record between its neighbours; not one further on."""
    book = default_book("DSJ", malformed_every=0)
    agency = start_soap_agency("DSJ", book=book)
    try:
        for n in range(1, 6):
            book.add_penalty(subject_name=f"天津南开测试{n}号有限公司", uscc=soap_uscc(n))
        book.penalties[:] = [p for p in book.penalties if p.seq in served or (p.seq == 2 and None in served)]
        book.penalties[1].seq = None  # the agency's export lost this record's number
        adapter = soap_adapter(soap_spec("DSJ", agency.endpoint, page_size=10), tmp_path)
        if jump:
            with pytest.raises(FatalError, match=f"sequence jumps {jump}"):
                adapter.fetch(Cursor())
        else:
            page = adapter.fetch(Cursor())
    finally:
        agency.stop()
    if not jump:
        assert (len(page.records), len(page.rejected), page.next_cursor.position) == (3, 1, 4)


def test_a_gap_in_the_sequence_stops_the_pull_rather_than_skip_what_is_in_it(tmp_path):
    """REST did already: an agency that commits seq 3 after serving 4 would otherwise lose 3 for good."""
    book = default_book("DSJ", malformed_every=0)
    agency = start_soap_agency("DSJ", book=book)
    try:
        for n in range(1, 5):
            book.add_penalty(subject_name=f"天津南开测试{n}号有限公司", uscc=soap_uscc(n))
        del book.penalties[2]  # seq 3 is not there yet: the agency serves 1, 2, 4
        adapter = soap_adapter(soap_spec("DSJ", agency.endpoint, page_size=10), tmp_path)
        with pytest.raises(FatalError, match="sequence jumps from 2 to 4"):
            adapter.fetch(Cursor())
        page = adapter.fetch(Cursor(position=4))  # from where the hub stands once 3 is there, all is well
    finally:
        agency.stop()
    assert page.records == [] and page.next_cursor.position == 4
