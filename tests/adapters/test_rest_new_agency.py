"""A new REST agency from data alone: an agency file for the hub, a dialect file for the sandbox.

No Python is written for the newcomer: the hub loads its TOML through the registry and builds
its adapter through ``adapters.build_adapter``; the sandbox serves it from a dialect table.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from adapters import AdapterContext, build_adapter
from adapters.base import Cursor, OutboundMessage, payload_digest
from contracts.mapping import licence_to_native, native_to_violation
from contracts.records import LicenceGrant, PenaltyType
from contracts.registry import load_registry
from contracts.uscc import org_check_char, uscc_check_char
from hub.errors import ContractViolation
from sandbox.rest_agencies import start_rest_agency
from sandbox.rest_dialects import dialect_from_data

AGENCY_USCC = "11120104MB1A20096A"

# What the hub is told: the agency file an operator would add to contracts/agencies/.
AGENCY_FILE = """
code = "WJW"
name_zh = "天津市南开区卫生健康委员会"
name_en = "Nankai Health Commission"
kind = "regulator"
uscc = "11120104MB1A20096A"
protocol = "rest"
endpoint = "http://127.0.0.1:1"
credentials = "env:HUB_WJW_TOKEN"
schedule_seconds = 120

[receives]
industries = ["医疗机构"]

[rest]
push_path = "/open/v1/xuke"
pull_path = "/open/v1/chufa"
pagination = "page"
page_size = 3
auth = "bearer"
batch_field = "batch"
message_id_field = "msgId"
payload_field = "body"
params = { page = "p", limit = "n" }
fields = { items = "payload.records", total = "payload.count", sequence = "no" }
receipt = { items = "payload.acks", message_id = "msgId", ack_id = "ackNo", received_at = "at", digest = "hash", duplicate = "dup" }

[licence_mapping]
date_formats = ["%Y/%m/%d"]
fields = { XK_XDR_MC = "org_name", XK_XDR_SHXYM = "credit_code", XK_WSH = "doc_no", XK_XKLB = "kind", XK_NR = "scope", XK_JDRQ = "decided", XK_YXQZ = "from", XK_YXQZI = "to", approval_item = "item", lifecycle = "state", lifecycle_date = "state_date" }

[violation_mapping]
record_id = "rid"
date_formats = ["%Y/%m/%d"]
list_separator = "|"
fields = { CF_XDR_MC = "org_name", CF_XDR_SHXYM = "credit_code", CF_WSH = "doc_no", CF_WFXW = "act", CF_SY = "facts", CF_YJ = "basis", CF_CFLB = "kinds", CF_NR = "content", CF_NR_FK = "fine_yuan", CF_JDRQ = "decided", CF_YXQ = "valid_to" }
values = { CF_CFLB = { W = "警告", R = "通报批评", F = "罚款", G = "没收违法所得", S = "暂扣许可证件" } }
units = { CF_NR_FK = "yuan" }
constants = { CF_XDR_LB = "法人及非法人组织", CF_CFJG = "天津市南开区卫生健康委员会", CF_CFJGDM = "11120104MB1A20096A", CF_SJLY = "天津市南开区卫生健康委员会", CF_SJLYDM = "11120104MB1A20096A" }
"""

# How the simulated agency speaks: the sandbox's own data, independent of the hub's file.
DIALECT_FILE = """
code = "WJW"
name = "天津市南开区卫生健康委员会"
name_en = "Nankai Health Commission"
uscc = "11120104MB1A20096A"
pagination = "page"
push_path = "/open/v1/xuke"
pull_path = "/open/v1/chufa"
probe_path = "/open/v1/ping"
licence_subject = ["org_name", "credit_code"]
params = { page = "p", limit = "n" }
items_path = "payload.records"
envelope = { total = "payload.count" }
list_separator = "|"
fine_unit = "yuan"
date_format = "%Y/%m/%d"
batch_field = "batch"
message_id_field = "msgId"
payload_field = "body"
auth = "bearer"
default_token = "wjw-secret"
receipt = { items = "payload.acks", message_id = "msgId", ack_id = "ackNo", received_at = "at", digest = "hash", duplicate = "dup" }
penalty_codes = { "警告" = "W", "通报批评" = "R", "罚款" = "F", "没收违法所得" = "G", "暂扣许可证件" = "S" }
penalty_fields = { seq = "no", record_id = "rid", subject_name = "org_name", uscc = "credit_code", decision_no = "doc_no", violation_type = "act", facts = "facts", legal_basis = "basis", penalties = "kinds", content = "content", fine = "fine_yuan", decision_date = "decided", validity_end = "valid_to" }
"""


def _uscc(n: int) -> str:
    org8 = f"{n:08d}"
    body = "91120104" + org8 + org_check_char(org8)
    return body + uscc_check_char(body)


def _grant(n: int) -> LicenceGrant:
    return LicenceGrant.model_validate({
        "XK_XDR_MC": f"天津南开{n}号诊所有限公司", "XK_XDR_LB": "法人及非法人组织", "XK_XDR_SHXYM": _uscc(n),
        "XK_XKWS": "医疗机构执业许可决定书", "XK_WSH": f"津南审批许字〔2026〕9{n:03d}号", "XK_XKLB": "认可",
        "XK_NR": "诊所执业", "XK_JDRQ": "2026-03-02", "XK_YXQZ": "2026-03-02", "XK_YXQZI": "2031-03-01",
        "XK_XKJG": "天津市南开区行政审批局", "XK_XKJGDM": "11120104MB01234578", "XK_LYDW": "天津市南开区行政审批局",
        "XK_LYDWDM": "11120104MB01234578", "approval_item": "NK-WJ-040", "bureau_section": "社会事务科",
        "industry": "医疗机构",
    })  # fmt: skip


@pytest.fixture
def newcomer(tmp_path: Path):
    dialect = dialect_from_data(tomllib.loads(DIALECT_FILE))
    agency = start_rest_agency("WJW", dialect=dialect, malformed_every=4)
    (tmp_path / "wjw.toml").write_text(AGENCY_FILE, encoding="utf-8")
    spec = load_registry(tmp_path, overrides={"WJW": {"endpoint": agency.endpoint}})["WJW"]
    adapter = build_adapter(spec, AdapterContext(work_dir=tmp_path, secret=agency.token))
    yield agency, spec, adapter
    adapter.close()
    agency.stop()


def test_a_new_rest_agency_from_data_files_alone(newcomer) -> None:
    agency, spec, adapter = newcomer
    grants = [_grant(n) for n in range(1, 6)]
    messages = [OutboundMessage(f"wjw-{i}", g.decision_no, licence_to_native(g, spec.licence_mapping))
                for i, g in enumerate(grants)]  # fmt: skip
    receipts = adapter.deliver(messages)
    assert [r.digest for r in receipts] == [payload_digest(m.payload) for m in messages]
    assert agency.book.licences() == [m.payload for m in messages]
    assert messages[0].payload["decided"] == "2026/03/02" and messages[0].payload["state"] == "granted"

    records, cursor = [], Cursor()
    while True:
        page = adapter.fetch(cursor)
        records += page.records
        cursor = page.next_cursor
        if not page.more:
            break
    drafts = agency.book.penalties
    assert cursor.position == len(drafts) > 3  # more than one page of three
    assert [r.ref for r in records] == [d.record_id for d in drafts]
    mapped = 0
    for draft, inbound in zip(drafts, records, strict=True):
        if draft.malformation:
            with pytest.raises(ContractViolation):
                native_to_violation(inbound.native, spec.violation_mapping, agency_code="WJW", record=inbound.ref)
            continue
        record = native_to_violation(inbound.native, spec.violation_mapping, agency_code="WJW", record=inbound.ref)
        assert (record.uscc, record.decision_no, record.authority_uscc) == (draft.uscc, draft.decision_no, AGENCY_USCC)
        assert record.penalty_types == tuple(PenaltyType(p) for p in draft.penalties)
        assert record.fine == draft.fine_wanyuan and (record.fine is None or isinstance(record.fine, Decimal))
        assert record.decision_date == dt.date.fromisoformat(draft.decision_date)
        mapped += 1
    assert mapped > 0
    assert adapter.probe().ok
