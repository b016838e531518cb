"""Hostile input is refused with a clear error, and nothing of it is written.

DTDs and entities (billion laughs, XXE reaching a local file) in SOAP requests and responses
and in XML drops; path traversal in a drop manifest; malformed UTF-8/GBK; oversized files;
a replayed message id with a different payload; SQL-looking text (stored verbatim, harmless).
Every peer is real and on 127.0.0.1; every check looks at what was (not) stored.
"""

from __future__ import annotations

import json
from contextlib import closing
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
from sqlmodel import func, select
from typer.testing import CliRunner

from adapters import AdapterContext, build_adapter
from adapters.base import Cursor, OutboundMessage
from adapters.soap import reset_clients
from contracts.mapping import licence_to_native
from contracts.records import LicenceGrant
from contracts.registry import load_registry
from hub.cli import app
from hub.db import session_scope
from hub.errors import FatalError, RefusedInput
from hub.intake import read_licence_file
from hub.models import AuditEntry, Licence, QuarantinedRecord, Violation
from hub.operations import sync_agencies
from hub.runtime import HubRuntime
from hub.settings import Settings
from sandbox.cluster import start_sandbox
from sandbox.core import LoopbackHTTPServer
from sandbox.rest_agencies import start_rest_agency
from sandbox.soap_agencies import start_soap_agency
from tests.helpers import grant, write_jsonl

SECRET = "the-local-file-an-attacker-wants"


@pytest.fixture(autouse=True)
def _fresh_soap_clients():
    yield
    reset_clients()


@pytest.fixture
def secret_file(tmp_path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET, encoding="utf-8")
    return path


def billion_laughs(inner: str) -> bytes:
    entities = "".join(f'<!ENTITY l{i} "{"".join(f"&l{i - 1};" for _ in range(10))}">' for i in range(1, 10))
    return (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "lol">{entities}]>' + inner.replace("@", "&l9;")).encode()


def xxe(inner: str, secret: Path) -> bytes:
    return (f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
            + inner.replace("@", "&x;")).encode()  # fmt: skip


SOAP_PUSH = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
             'xmlns:g="urn:shenguan:gsj:licence-exchange:v1"><soap:Body><g:ReceiveLicenceRequest>'
             '<g:messageId>m-1</g:messageId><g:licence><g:party><g:name>@</g:name></g:party></g:licence>'
             '</g:ReceiveLicenceRequest></soap:Body></soap:Envelope>')  # fmt: skip


# --- XML with a DTD: the SOAP sandbox, the SOAP adapter, XML file drops ---------------------------
@pytest.mark.parametrize("attack", ["billion laughs", "xxe"])
def test_the_soap_agency_refuses_a_request_with_a_dtd(attack, secret_file):
    agency = start_soap_agency("GSJ")
    try:
        body = billion_laughs(SOAP_PUSH) if attack == "billion laughs" else xxe(SOAP_PUSH, secret_file)
        answer = requests.post(agency.endpoint, data=body, headers={"Content-Type": "text/xml"}, timeout=10)
    finally:
        agency.stop()
    assert answer.status_code == 500 and "soap:Client" in answer.text and "DTD" in answer.text
    assert SECRET not in answer.text and "lollol" not in answer.text
    assert agency.book.received == {}


class _Hostile(BaseHTTPRequestHandler):
    """An agency gone bad: answers every SOAP call with the server's canned XML."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


SOAP_ANSWER = ('<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
               'xmlns:g="urn:shenguan:gsj:licence-exchange:v1"><soap:Body><g:QueryPenaltiesResponse>'
               '<g:penalties><g:penalty><g:seq>1</g:seq><g:recordId>@</g:recordId></g:penalty></g:penalties>'
               '<g:hasMore>false</g:hasMore></g:QueryPenaltiesResponse></soap:Body></soap:Envelope>')  # fmt: skip


@pytest.mark.parametrize("attack", ["billion laughs", "xxe"])
def test_the_soap_adapter_refuses_a_response_with_a_dtd(attack, secret_file, tmp_path):
    server = LoopbackHTTPServer(_Hostile)
    server.body = billion_laughs(SOAP_ANSWER) if attack == "billion laughs" else xxe(SOAP_ANSWER, secret_file)
    server.start()
    try:
        spec = load_registry(overrides={"GSJ": {"endpoint": server.url + "/gsj", "tls": None}})["GSJ"]
        with closing(build_adapter(spec, AdapterContext(work_dir=tmp_path, read_timeout=5))) as adapter:
            with pytest.raises(RefusedInput, match="GSJ.*(DTD|Entit|entit)") as refused:
                adapter.fetch(Cursor())
    finally:
        server.stop()
    assert SECRET not in str(refused.value)


# --- drops through the hub: refused to failed/, quarantined with the reason, nothing loaded --------
@pytest.fixture
def drop_hub(tmp_path, monkeypatch):
    sandbox = start_sandbox(tmp_path / "sandbox", codes=["XFZD", "GHFJ"])
    for key, value in sandbox.env.items():
        monkeypatch.setenv(key, value)
    runtime = HubRuntime(Settings(data_dir=tmp_path / "hub", database_url=None, broker_url=None),
                         overrides=sandbox.overrides)  # fmt: skip
    runtime.init_database()
    yield sandbox, runtime
    runtime.dispose()
    sandbox.stop()


def _ghfj_items(value: str) -> str:
    return f"<GHFJData><Item><RecordNo>{value}</RecordNo></Item></GHFJData>"


TRAVERSAL = {"files": [{"name": "../../../etc/passwd", "size": 1, "sha256": "0" * 64}]}
BAD_GBK = "记录编号,当事人名称\r\nX-1,天津".encode("gbk") + b"\xff\xfe" + "公司\r\n".encode("gbk")
GOOD_GBK = "记录编号,当事人名称\r\nX-1,天津公司\r\n".encode("gbk")
DROP_CASES = {
    # case: (agency, bytes or a maker taking the secret file, write_batch kwargs, agency overrides, reason words)
    "billion laughs": ("GHFJ", lambda s: billion_laughs(_ghfj_items("@")), {}, {}, "DTD"),
    "XXE to a local file": ("GHFJ", lambda s: xxe(_ghfj_items("@"), s), {}, {}, "DTD"),
    "path traversal": ("GHFJ", lambda s: b"x", {"manifest_patch": TRAVERSAL}, {}, "leaves the batch directory"),
    "malformed GBK": ("XFZD", lambda s: BAD_GBK, {}, {}, ".csv: malformed gbk at byte offset 29"),
    "malformed UTF-8": ("XFZD", lambda s: "记录编号\r\nX-1".encode() + b"\xe4\xb8\r\n",
                        {"manifest_patch": {"encoding": "utf-8"}}, {}, ".csv: malformed utf-8 at byte offset 17"),
    "unknown encoding": ("XFZD", lambda s: GOOD_GBK, {"manifest_patch": {"encoding": "gbk-typo"}}, {},
                         "unknown encoding 'gbk-typo'"),
    "a bytes-to-bytes codec": ("XFZD", lambda s: GOOD_GBK, {"manifest_patch": {"encoding": "base64"}}, {},
                               "'base64' is not a text encoding"),
    "fewer records than the manifest says": ("XFZD", lambda s: GOOD_GBK, {"manifest_patch": {"record_count": 2}}, {},
                                             "the manifest says 2 records, its files hold 1"),
    "oversized file": ("GHFJ", lambda s: _ghfj_items("x" * 2000).encode(), {}, {"max_file_bytes": 1024},
                       "over the 1024 byte limit"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DROP_CASES))
def test_a_hostile_drop_is_refused_through_the_hub_and_nothing_is_loaded(drop_hub, secret_file, case):
    sandbox, runtime = drop_hub
    code, make, kwargs, transport, words = DROP_CASES[case]
    if transport:
        overrides = {**sandbox.overrides[code], "transport": {**sandbox.overrides[code]["transport"], **transport}}
        runtime = HubRuntime(runtime.settings, overrides={**sandbox.overrides, code: overrides})
    batch_id = sandbox.agencies[code].agency.write_batch(make(secret_file), **kwargs)

    lines = list(sync_agencies(runtime, [code], push=False))

    assert "1 quarantined" in lines[0][0], lines
    with session_scope(runtime.engine) as session:
        assert session.exec(select(func.count()).select_from(Violation)).one() == 0
        held = session.exec(select(QuarantinedRecord)).all()
    assert [q.record_ref for q in held] == [batch_id]
    assert words in json.dumps(held[0].reasons, ensure_ascii=False)
    assert SECRET not in json.dumps([q.reasons for q in held], ensure_ascii=False) + held[0].raw
    root = sandbox.agencies[code].root
    assert (root / "failed" / batch_id).is_dir() and words in (root / "failed" / f"{batch_id}.error").read_text("utf-8")


# --- licence files: malformed bytes, oversized ----------------------------------------------------
def _env(tmp_path: Path) -> dict[str, str]:
    return {"HUB_DATA_DIR": str(tmp_path / "hub")}


@pytest.mark.parametrize(
    ("content", "encoding", "offset"),
    [
        # 15 bytes of '{"XK_XDR_MC": "', one good character (3 bytes), then a truncated one at 18
        (b'{"XK_XDR_MC": "\xe5\xa4\xa9\xe6\xb4"}\n', "utf-8", 18),
        # 15 + 4 + 3 bytes of good GBK, then a lead byte without its pair at 22
        ('{"XK_XDR_MC": "天津"}\n'.encode("gbk") + b"\x81\x20\n", "gbk", 22),
        (b"\xff\xfe\xfd", None, 0),  # neither UTF-8 nor GBK
    ],
    ids=["utf-8", "gbk", "detected"],
)  # fmt: skip
def test_a_licence_file_with_malformed_bytes_is_refused_naming_file_and_offset(tmp_path, content, encoding, offset):
    path = tmp_path / "grants.jsonl"
    path.write_bytes(content)
    args = ["licences", "import", str(path)] + (["--encoding", encoding] if encoding else [])
    result = CliRunner().invoke(app, args, env=_env(tmp_path))
    assert result.exit_code == 1
    assert "grants.jsonl: not valid" in result.stderr and f"byte {offset}" in result.stderr
    runtime = HubRuntime(Settings(data_dir=tmp_path / "hub"))
    with session_scope(runtime.engine) as session:
        assert session.exec(select(func.count()).select_from(Licence)).one() == 0
    runtime.dispose()


def test_an_oversized_licence_file_is_refused_before_it_is_read(tmp_path):
    path = write_jsonl(tmp_path / "grants.jsonl", [grant(n) for n in range(1, 6)])
    assert len(read_licence_file(path, max_bytes=path.stat().st_size)) == 5
    with pytest.raises(RefusedInput, match=f"grants.jsonl: {path.stat().st_size} bytes is over the 1000 byte limit"):
        read_licence_file(path, max_bytes=1000)


# --- a replayed message id with a different payload ------------------------------------------------
def _messages(spec, message_id: str) -> tuple[OutboundMessage, OutboundMessage]:
    record = grant(7, approval_item="NK-JT-003", industry="道路运输")
    first = licence_to_native(LicenceGrant.model_validate(record), spec.licence_mapping)
    changed = licence_to_native(LicenceGrant.model_validate({**record, "XK_NR": "篡改后的许可内容"}),
                                spec.licence_mapping)  # fmt: skip
    return OutboundMessage(message_id, record["XK_WSH"], first), OutboundMessage(message_id, record["XK_WSH"], changed)


@pytest.mark.parametrize("code", ["JJZD", "GSJ"])
def test_a_replayed_message_id_with_another_payload_is_refused_and_nothing_recorded_twice(code, tmp_path):
    agency = start_rest_agency(code) if code == "JJZD" else start_soap_agency(code)
    try:
        spec = load_registry(overrides={code: {"endpoint": agency.endpoint, "tls": None}})[code]
        original, replay = _messages(spec, f"{code}-replayed-1")
        with closing(build_adapter(spec, AdapterContext(work_dir=tmp_path))) as adapter:
            [receipt] = adapter.deliver([original])
            assert adapter.deliver([original])[0].duplicate  # the same message again is fine
            with pytest.raises(FatalError, match=f"{code}.*(409|replay|different payload)"):
                adapter.deliver([replay])
    finally:
        agency.stop()
    assert list(agency.book.received) == [original.message_id]
    assert agency.book.received[original.message_id].payload == original.payload
    assert receipt.ack_id and not receipt.duplicate


# --- SQL-looking strings: stored verbatim, harmless --------------------------------------------------
SQL = ["'; DROP TABLE licences; --", "\" OR 1=1 --", "Robert'); DELETE FROM violations WHERE ('1'='1",
       "1; UPDATE audit_log SET actor='x'", "%' UNION SELECT * FROM companies --", "\\'; TRUNCATE quarantine; \\"]
LICENCE_TEXT = ["XK_XDR_MC", "XK_FRDB", "XK_XKWS", "XK_WSH", "XK_XKZS", "XK_XKBH", "XK_NR", "XK_XKJG", "XK_LYDW",
                "approval_item_name", "bureau_section", "industry", "BZ"]  # fmt: skip


def test_sql_looking_text_in_every_field_round_trips_verbatim(tmp_path):
    record = grant(9)
    for i, name in enumerate(LICENCE_TEXT):
        record[name] = f"{SQL[i % len(SQL)]} [{name}]"
    with start_sandbox(tmp_path / "sandbox", codes=["JJZD"]) as sandbox:
        draft = sandbox.books["JJZD"].add_penalty(subject_name=record["XK_XDR_MC"], uscc=record["XK_XDR_SHXYM"])
        draft.decision_no, draft.violation_type, draft.facts = SQL[0], SQL[1], SQL[2]
        draft.legal_basis, draft.content = SQL[3], SQL[4]
        path = write_jsonl(tmp_path / "grants.jsonl", [record])
        env = _env(tmp_path)
        assert CliRunner().invoke(app, ["licences", "import", str(path)], env=env).exit_code == 0
        runtime = HubRuntime(Settings(data_dir=tmp_path / "hub"), overrides=sandbox.overrides)
        assert all(ok for _, ok in sync_agencies(runtime, ["JJZD"], push=False))
        runtime.dispose()
    shown = CliRunner().invoke(app, ["history", record["XK_XDR_SHXYM"], "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    history = json.loads(shown.stdout)
    assert history["name"] == record["XK_XDR_MC"]
    runtime = HubRuntime(Settings(data_dir=tmp_path / "hub"))
    with session_scope(runtime.engine) as session:
        [licence] = session.exec(select(Licence)).all()
        for name in LICENCE_TEXT:
            assert licence.payload[name] == record[name], name
        [violation] = session.exec(select(Violation)).all()
        assert violation.decision_no == SQL[0]
        assert (violation.payload["CF_WFXW"], violation.payload["CF_SY"], violation.payload["CF_YJ"],
                violation.payload["CF_NR"]) == (SQL[1], SQL[2], SQL[3], SQL[4])  # fmt: skip
        assert session.exec(select(func.count()).select_from(AuditEntry)).one() >= 2  # every table still there
    runtime.dispose()
