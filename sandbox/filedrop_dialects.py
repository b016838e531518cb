"""The two file-drop dialects of the sandbox: how 消防支队 XFZD and 规划分局 GHFJ write and read their records.

- XFZD 消防支队: GBK CSV with Chinese headers; dates like 2026年03月01日; fines in 元.
- GHFJ 规划分局: UTF-8 XML; penalty kinds as codes; dates like 20260301; fines in 万元.

A dialect turns a penalty into the agency's row, and rows into a data file's bytes (whole, or
streamed row by row) and back. It knows nothing of drop roots, manifests or transports: the
running agency (sandbox.filedrop_agencies) does. Written with the standard library and lxml,
independently of adapters/drop_formats.py, so the tests prove two implementations agree on the
format rather than one implementation agreeing with itself.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from lxml import etree

from sandbox.core import PenaltyDraft

__all__ = ["DIALECTS", "Dialect"]


def _date(iso: str, fmt: str) -> str:
    try:
        return dt.date.fromisoformat(iso).strftime(fmt)
    except ValueError:  # a malformed date is passed on as the agency would write it
        y, _, rest = iso.partition("-")
        m, _, d = rest.partition("-")
        return fmt.replace("%Y", y).replace("%m", m).replace("%d", d)


_XFZD_WORDS = {"暂扣许可证件": "暂扣许可证", "吊销许可证件": "吊销许可证", "责令停产停业": "责令停业"}
_GHFJ_CODES = {"警告": "01", "通报批评": "02", "罚款": "03", "没收违法所得": "04", "没收非法财物": "05",
               "暂扣许可证件": "06", "吊销许可证件": "07", "责令停产停业": "08"}  # fmt: skip


_XFZD_KINDS = {"法人及非法人组织": "单位", "自然人": "个人", "个体工商户": "个体户"}


def _xfzd_penalty(p: PenaltyDraft, licence: dict[str, Any]) -> dict[str, str]:
    """A penalty row as 消防支队 writes it; subject details come from the licence it holds."""
    fmt = "%Y年%m月%d日"
    return {
        "记录编号": p.record_id, "当事人名称": p.subject_name,
        "当事人类别": _XFZD_KINDS.get(licence.get("行政相对人类别", ""), "单位"), "统一社会信用代码": p.uscc,
        "工商注册号": licence.get("工商注册号", ""), "组织机构代码": "", "税务登记号": "", "事业单位证书号": "",
        "社会组织登记证号": "", "法定代表人": licence.get("法定代表人", ""), "处罚决定书文号": p.decision_no, "违法行为类型": p.violation_type, "违法事实": p.facts,
        "处罚依据": p.legal_basis, "处罚种类": "、".join(_XFZD_WORDS.get(w, w) for w in p.penalties),
        "处罚内容": p.content, "罚款金额（元）": p.amount_text("yuan") or "", "没收金额（元）": "",
        "暂扣吊销证照": "", "处罚决定日期": _date(p.decision_date, fmt), "处罚有效期至": _date(p.validity_end, fmt),
        "公示截止日期": "", "备注": "",
    }  # fmt: skip


def _ghfj_penalty(p: PenaltyDraft, licence: dict[str, Any]) -> dict[str, str]:
    """A penalty item as 规划分局 writes it; subject details come from the licence it holds."""
    fmt = "%Y%m%d"
    return {
        "RecordNo": p.record_id, "PartyName": p.subject_name, "PartyType": licence.get("SubjectType", "1"),
        "CreditCode": p.uscc, "RegNo": licence.get("RegNo", ""), "OrgCode": "", "TaxNo": "", "InstitutionNo": "",
        "SocialOrgNo": "", "LegalRep": licence.get("LegalRep", ""),
        "DecisionNo": p.decision_no, "IllegalAct": p.violation_type, "Facts": p.facts, "Basis": p.legal_basis,
        "PenaltyKinds": ";".join(_GHFJ_CODES.get(w, w) for w in p.penalties), "PenaltyContent": p.content,
        "FineWanYuan": p.amount_text("wanyuan") or "", "ConfiscatedWanYuan": "", "SuspendedLicence": "",
        "DecisionDate": _date(p.decision_date, fmt), "ValidUntil": _date(p.validity_end, fmt),
        "PublishUntil": "", "Remark": "",
    }  # fmt: skip


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _csv_writer(text: IO[str], first_row: dict[str, str]) -> csv.DictWriter:
    """A CSV writer whose header is the first row's keys, already written."""
    writer = csv.DictWriter(text, fieldnames=list(first_row), lineterminator="\r\n")
    writer.writeheader()
    return writer


@dataclass(frozen=True)
class Dialect:
    """How one agency writes and reads its drops."""

    code: str
    name: str
    uscc: str
    transport: str  # "sftp" or "dir"
    format: str  # "csv" or "xml"
    encoding: str
    message_id_field: str
    subject_fields: tuple[str, str]
    render_penalty: Callable[[PenaltyDraft, dict[str, Any]], dict[str, str]]
    xml_root: str = "records"
    xml_record: str = "record"

    @property
    def extension(self) -> str:
        """The data files' extension."""
        return "csv" if self.format == "csv" else "xml"

    def parse(self, data: bytes, encoding: str) -> list[dict[str, str]]:
        """The rows of one data file (XML: no DTD, no entities, no network)."""
        if self.format == "csv":
            return list(csv.DictReader(io.StringIO(data.decode(encoding), newline="")))
        root = etree.fromstring(data, parser=_parser())
        return [{child.tag: child.text or "" for child in item} for item in root]

    def render(self, rows: list[dict[str, str]]) -> bytes:
        """Rows as one data file, whole in memory; the header (CSV) follows the first row."""
        if self.format == "csv":
            buf = io.StringIO(newline="")
            _csv_writer(buf, rows[0]).writerows(rows)
            return buf.getvalue().encode(self.encoding)
        root = etree.Element(self.xml_root)
        for row in rows:
            root.append(self._xml_item(row))
        return etree.tostring(root, xml_declaration=True, encoding=self.encoding, pretty_print=True)

    def stream(self, rows: Iterable[dict[str, str]], sink: IO[bytes]) -> None:
        """Rows written into the binary ``sink`` one by one, never all in memory."""
        if self.format == "csv":
            text = io.TextIOWrapper(sink, encoding=self.encoding, newline="")
            writer = None
            for row in rows:
                if writer is None:
                    writer = _csv_writer(text, row)
                writer.writerow(row)
            text.flush()
            text.detach()
            return
        with etree.xmlfile(sink, encoding=self.encoding) as xf:
            xf.write_declaration()
            with xf.element(self.xml_root):
                for row in rows:
                    xf.write(self._xml_item(row), pretty_print=True)

    def _xml_item(self, row: dict[str, str]) -> etree._Element:
        item = etree.Element(self.xml_record)
        for key, value in row.items():
            etree.SubElement(item, key).text = value
        return item


DIALECTS = {
    "XFZD": Dialect("XFZD", "天津市南开区消防救援支队", "11120104MB0212345Y", "sftp", "csv", "gbk",
                    "报送编号", ("行政相对人名称", "统一社会信用代码"), _xfzd_penalty),
    "GHFJ": Dialect("GHFJ", "天津市规划和自然资源局南开分局", "11120104MB0312346L", "dir", "xml", "utf-8",
                    "MessageId", ("SubjectName", "CreditCode"), _ghfj_penalty, "GHFJData", "Item"),
}  # fmt: skip
