"""The two SOAP dialects of the sandbox: what makes 国税局 GSJ and 地税局 DSJ each its own.

GSJ: English-ish element names, the subject inside <party>, fines in yuan, ISO dates, English
penalty words joined by ','. DSJ: pinyin names, the subject inside <dangShiRen>, fines in 万元,
``yyyyMMdd`` dates, two-digit penalty codes joined by ';'. Rendering is plain data (``Tree``);
sandbox.soap_agencies turns it into XML in the dialect's namespace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.core import Ack, PenaltyDraft

__all__ = ["DIALECTS", "Dialect", "Tree"]

Tree = dict[str, Any]  # element name -> text | Tree | list[Tree]; rendered in the dialect's namespace


@dataclass(frozen=True)
class Dialect:
    """Everything that makes one agency's SOAP service its own."""

    code: str
    name: str
    uscc: str
    wsdl: str
    path: str
    ns: str
    push_element: str
    message_id: str
    licence: str
    push_response: str
    pull_element: str
    pull_response: str
    after: str
    limit: str
    subject_fields: tuple[str, str]
    render_ack: Callable[[Ack], Tree]
    render_page: Callable[[list[PenaltyDraft], bool], Tree]


# --- GSJ: English-ish names, yuan, ISO dates ------------------------------------------------
_GSJ_WORDS = {
    "警告": "warning", "通报批评": "public-reprimand", "罚款": "fine", "没收违法所得": "confiscation-of-gains",
    "暂扣许可证件": "licence-suspension", "吊销许可证件": "licence-revocation", "责令停产停业": "business-suspension",
}  # fmt: skip


def _gsj_ack(ack: Ack) -> Tree:
    return {"ack": {"ackId": ack.ack_id, "receivedAt": ack.received_at.isoformat(), "digest": ack.digest,
                    "duplicate": str(ack.duplicate).lower()}}  # fmt: skip


def _gsj_penalty(p: PenaltyDraft) -> Tree:
    return {
        "seq": str(p.seq),
        "recordId": p.record_id,
        "party": {"name": p.subject_name, "category": "enterprise", "creditCode": p.uscc},
        "decision": {"number": p.decision_no, "date": p.decision_date, "validUntil": p.validity_end},
        "violation": {"type": p.violation_type, "facts": p.facts, "legalBasis": p.legal_basis},
        "sanction": {"kinds": ",".join(_GSJ_WORDS.get(w, w) for w in p.penalties), "content": p.content,
                     "fineYuan": p.amount_text("yuan")},
    }  # fmt: skip


def _gsj_page(items: list[PenaltyDraft], more: bool) -> Tree:
    return {"penalties": {"penalty": [_gsj_penalty(p) for p in items]}, "hasMore": str(more).lower()}


# --- DSJ: pinyin names, 万元, yyyyMMdd dates, penalty codes -----------------------------------
_DSJ_CODES = {
    "警告": "01", "通报批评": "02", "罚款": "03", "没收违法所得": "04",
    "暂扣许可证件": "05", "吊销许可证件": "06", "责令停产停业": "07",
}  # fmt: skip


def _dsj_ack(ack: Ack) -> Tree:
    return {"huiZhi": {"huiZhiBianHao": ack.ack_id, "jieShouShiJian": ack.received_at.isoformat(),
                       "zhaiYao": ack.digest, "chongFu": str(ack.duplicate).lower()}}  # fmt: skip


def _dsj_penalty(p: PenaltyDraft) -> Tree:
    return {
        "xuHao": str(p.seq),
        "jiLuBianHao": p.record_id,
        "dangShiRen": {"mingCheng": p.subject_name, "leiBie": "1", "tongYiDaiMa": p.uscc},
        "wenHao": p.decision_no,
        "weiFaLeiXing": p.violation_type,
        "weiFaShiShi": p.facts,
        "chuFaYiJu": p.legal_basis,
        "chuFaLeiBie": ";".join(_DSJ_CODES.get(w, w) for w in p.penalties),
        "chuFaNeiRong": p.content,
        "faKuanJinE": p.amount_text("wanyuan"),
        "jueDingRiQi": p.decision_date.replace("-", ""),
        "youXiaoQi": p.validity_end.replace("-", ""),
    }


def _dsj_page(items: list[PenaltyDraft], more: bool) -> Tree:
    return {"chuFaLieBiao": {"chuFa": [_dsj_penalty(p) for p in items]}, "haiYouGengDuo": str(more).lower()}


DIALECTS: dict[str, Dialect] = {
    "GSJ": Dialect(
        code="GSJ", name="国税局南开分局", uscc="11120104MB1201613X", wsdl="gsj_licence_exchange.wsdl",
        path="/gsj/ws/LicenceExchange", ns="urn:shenguan:gsj:licence-exchange:v1",
        push_element="ReceiveLicenceRequest", message_id="messageId", licence="licence",
        push_response="ReceiveLicenceResponse", pull_element="QueryPenaltiesRequest",
        pull_response="QueryPenaltiesResponse",
        after="afterSeq", limit="maxCount", subject_fields=("party.name", "party.creditCode"),
        render_ack=_gsj_ack, render_page=_gsj_page,
    ),
    "DSJ": Dialect(
        code="DSJ", name="地税局南开分局", uscc="11120104MB12017284", wsdl="dsj_jiaohuan.wsdl",
        path="/dsj/services/JiaoHuanFuWu", ns="http://dsj.nankai.tj.gov.cn/jiaohuan/v2",
        push_element="jieShouXuKe", message_id="xiaoXiId", licence="xuKeXinXi",
        push_response="jieShouXuKeFanHui", pull_element="chaXunChuFa", pull_response="chaXunChuFaFanHui",
        after="qiShiXuHao", limit="zuiDaTiaoShu", subject_fields=("xiangDuiRen.mingCheng", "xiangDuiRen.tongYiDaiMa"),
        render_ack=_dsj_ack, render_page=_dsj_page,
    ),
}  # fmt: skip
