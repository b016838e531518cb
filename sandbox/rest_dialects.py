"""How each simulated REST agency speaks, as data: paths, pagination, field names, codes, units.

A dialect knows nothing of the hub's contracts. A new REST agency for a test or a demo is
``dialect_from_data({...})`` — a dict (or a TOML table) — and no new Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

__all__ = ["GAFJ", "JJZD", "REST_DIALECTS", "SCJG", "RestDialect", "dialect_from_data"]

#: PenaltyDraft attributes a dialect may render, in this order.
PENALTY_ATTRIBUTES = (
    "seq", "record_id", "subject_name", "uscc", "decision_no", "violation_type", "facts",
    "legal_basis", "penalties", "content", "fine", "decision_date", "validity_end",
)  # fmt: skip


@dataclass(frozen=True)
class RestDialect:
    """One REST agency's native API.

    Dotted names (``result.list``) place a value inside nested objects of the envelope.
    """

    code: str
    name: str
    name_en: str
    uscc: str
    pagination: Literal["cursor", "page", "offset"]
    push_path: str
    pull_path: str
    probe_path: str
    licence_subject: tuple[str, str]  # where a received licence names the company and its USCC
    penalty_fields: dict[str, str]  # PenaltyDraft attribute -> native key
    params: dict[str, str] = field(default_factory=dict)  # cursor / offset / page / limit -> query name
    items_path: str = "items"
    envelope: dict[str, str] = field(default_factory=dict)  # next_cursor / has_more / total -> dotted name
    envelope_extra: dict[str, Any] = field(default_factory=dict)  # constant members of every pull answer
    constant_fields: dict[str, Any] = field(default_factory=dict)  # added to every penalty record
    penalty_codes: dict[str, str] = field(default_factory=dict)  # our penalty word -> the agency's code
    list_separator: str = ";"
    fine_unit: Literal["yuan", "wanyuan"] = "yuan"
    fine_as_number: bool = False  # a JSON number (exact text) rather than a string
    date_format: str = "%Y-%m-%d"
    delivery: Literal["batch", "single"] = "batch"
    batch_field: str = "licences"
    message_id_field: str = "messageId"
    payload_field: str = "licence"
    idempotency_header: str = "Idempotency-Key"
    receipt: dict[str, str] = field(default_factory=dict)  # items / message_id / ack_id / received_at / digest / duplicate
    auth: Literal["none", "bearer"] = "none"
    default_token: str | None = None
    max_page_size: int = 1000

    def param(self, name: str) -> str:
        return self.params.get(name, name)

    def receipt_field(self, name: str) -> str:
        defaults = {"items": "receipts", "message_id": "messageId", "ack_id": "ackId",
                    "received_at": "receivedAt", "digest": "digest", "duplicate": "duplicate"}  # fmt: skip
        return self.receipt.get(name, defaults[name])


def dialect_from_data(data: Mapping[str, Any]) -> RestDialect:
    """Build a dialect from plain data (a dict or a parsed TOML table); unknown keys are refused."""
    known = {f.name for f in fields(RestDialect)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown dialect key(s): {', '.join(unknown)}")
    values = dict(data)
    values["licence_subject"] = tuple(values["licence_subject"])
    bad = sorted(set(values["penalty_fields"]) - set(PENALTY_ATTRIBUTES))
    if bad:
        raise ValueError(f"penalty_fields: not PenaltyDraft attributes: {', '.join(bad)}")
    return RestDialect(**values)


# 市场监管局: cursor pagination, camelCase English, fines in yuan as JSON numbers, bearer token.
SCJG = dialect_from_data({
    "code": "SCJG", "name": "天津市南开区市场监督管理局", "name_en": "Nankai Market Supervision Bureau",
    "uscc": "11120104MB1A20010F", "pagination": "cursor",
    "push_path": "/api/v2/licences", "pull_path": "/api/v2/penalties", "probe_path": "/api/v2/ping",
    "licence_subject": ("entName", "uniscid"),
    "params": {"cursor": "cursor", "limit": "limit"},
    "items_path": "data", "envelope": {"next_cursor": "nextCursor", "has_more": "hasMore"},
    "penalty_fields": {
        "seq": "seq", "record_id": "penaltyId", "subject_name": "entName", "uscc": "uniscid",
        "decision_no": "penDecNo", "violation_type": "illegActType", "facts": "illegFact",
        "legal_basis": "penBasis", "penalties": "penType", "content": "penContent", "fine": "penAm",
        "decision_date": "penDecIssDate", "validity_end": "penValidTo",
    },
    "constant_fields": {"subjectType": "LEGAL"},
    "list_separator": ";", "fine_unit": "yuan", "fine_as_number": True, "date_format": "%Y-%m-%d",
    "delivery": "batch", "batch_field": "licences", "message_id_field": "messageId", "payload_field": "licence",
    "receipt": {"items": "receipts", "message_id": "messageId", "ack_id": "ackId",
                "received_at": "receivedAt", "digest": "sha256", "duplicate": "duplicate"},
    "auth": "bearer", "default_token": "sandbox-scjg-token",
})  # fmt: skip

# 公安分局: offset pagination, pinyin snake_case, its own penalty codes, one licence per request.
GAFJ = dialect_from_data({
    "code": "GAFJ", "name": "天津市公安局南开分局", "name_en": "Nankai Public Security Sub-bureau",
    "uscc": "11120104MB1A20029C", "pagination": "offset",
    "push_path": "/gafj/api/xkxx", "pull_path": "/gafj/api/cfxx", "probe_path": "/gafj/api/xt/zt",
    "licence_subject": ("xdr_mc", "xdr_shxym"),
    "params": {"offset": "start", "limit": "rows"},
    "items_path": "rows", "envelope": {"total": "total"},
    "penalty_fields": {
        "seq": "xh", "record_id": "cfbh", "subject_name": "dsr_mc", "uscc": "dsr_tyshxydm",
        "decision_no": "cfjdsh", "violation_type": "wfxw", "facts": "wfss", "legal_basis": "cfyj",
        "penalties": "cfzl", "content": "cfnr", "fine": "fkje", "decision_date": "cfjdrq", "validity_end": "yxqz",
    },
    "constant_fields": {"dsr_lx": "2"},
    "penalty_codes": {"警告": "01", "通报批评": "02", "罚款": "03", "没收违法所得": "04",
                      "暂扣许可证件": "05", "吊销许可证件": "06", "责令停产停业": "07"},
    "list_separator": ",", "fine_unit": "yuan", "fine_as_number": False, "date_format": "%Y%m%d",
    "delivery": "single", "idempotency_header": "X-Xxbh",
    "receipt": {"message_id": "xxbh", "ack_id": "hzbh", "received_at": "jssj", "digest": "zyz", "duplicate": "sfcf"},
})  # fmt: skip

# 交警支队: page-number pagination, Chinese keys nested under result, fines in 万元.
JJZD = dialect_from_data({
    "code": "JJZD", "name": "天津市公安交通管理局南开支队", "name_en": "Nankai Traffic Police Detachment",
    "uscc": "11120104MB1A200377", "pagination": "page",
    "push_path": "/jjzd/xkxx/jieshou", "pull_path": "/jjzd/cfxx/chaxun", "probe_path": "/jjzd/xitong/zhuangtai",
    "licence_subject": ("行政相对人名称", "统一社会信用代码"),
    "params": {"page": "pageNo", "limit": "pageSize"},
    "items_path": "result.list", "envelope": {"total": "result.total"},
    "envelope_extra": {"code": 0, "msg": "成功"},
    "penalty_fields": {
        "seq": "序号", "record_id": "记录编号", "subject_name": "当事人名称", "uscc": "统一社会信用代码",
        "decision_no": "处罚决定书文号", "violation_type": "违法行为类型", "facts": "违法事实",
        "legal_basis": "处罚依据", "penalties": "处罚种类", "content": "处罚内容", "fine": "罚款金额（万元）",
        "decision_date": "处罚决定日期", "validity_end": "处罚有效期至",
    },
    "constant_fields": {"当事人类别": "单位"},
    "penalty_codes": {"暂扣许可证件": "暂扣证照", "吊销许可证件": "吊销证照"},
    "list_separator": "、", "fine_unit": "wanyuan", "fine_as_number": True, "date_format": "%Y年%m月%d日",
    "delivery": "batch", "batch_field": "许可列表", "message_id_field": "消息编号", "payload_field": "许可信息",
    "receipt": {"items": "回执列表", "message_id": "消息编号", "ack_id": "回执编号",
                "received_at": "接收时间", "digest": "摘要", "duplicate": "重复"},
})  # fmt: skip

REST_DIALECTS: dict[str, RestDialect] = {d.code: d for d in (SCJG, GAFJ, JJZD)}
