"""Synthetic agency data for benchmarks: penalty n rendered on demand, never stored.

A sandbox AgencyBook keeps its penalties in a list; a million PenaltyDrafts would cost
gigabytes and minutes before the first request. ``LazyPenalties`` is a read-only sequence
that builds draft n from n alone, so a book can serve 10^6 (or 10^7) records in constant
memory. It plugs into the existing AgencyBook through its ``penalties`` field: no change to
sandbox/core.py, and everything the REST/file-drop front-ends do with the list (len, slices)
works unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from decimal import Decimal
from functools import lru_cache
from hashlib import sha256

from adapters.base import canonical_json
from contracts.mapping import default_severity
from contracts.records import LONG_TERM, PenaltyType
from contracts.uscc import org_check_char, uscc_check_char
from sandbox.core import PENALTY_WORDS, AgencyBook, PenaltyDraft

__all__ = ["COMPANY_COLUMNS", "LICENCE_COLUMNS", "VIOLATION_COLUMNS", "LazyPenalties", "ReviewDataset", "company_name",
           "synthetic_book", "synthetic_uscc"]  # fmt: skip

_TYPES = ("未按规定公示年度报告", "消防设施未保持完好有效", "未按期申报纳税", "违规停放车辆")
_FINES = (None, Decimal("0.2"), Decimal("0.5"), Decimal("1"), Decimal("3"), Decimal("20"))


@lru_cache(maxsize=65536)
def synthetic_uscc(index: int) -> str:
    """A valid USCC for company ``index`` (position 17 and 18 checks computed, as GB 32100 requires)."""
    org8 = f"{index:08d}"
    body17 = "91120104" + org8 + org_check_char(org8)
    return body17 + uscc_check_char(body17)


def company_name(index: int) -> str:
    return f"天津市南开区第{index}号商贸有限公司"


class LazyPenalties(Sequence):
    """``count`` penalties of ``companies`` companies, draft n (1-based seq) computed from n."""

    def __init__(self, code: str, count: int, *, companies: int | None = None, abbreviation: str = "") -> None:
        self.code, self.count = code, count
        self.companies = companies or max(1, count // 5)
        self.abbreviation = abbreviation or code
        self.today = dt.date.today()

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self._draft(i + 1) for i in range(*index.indices(self.count))]
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self._draft(index + 1)

    def _draft(self, seq: int) -> PenaltyDraft:
        company = (seq * 7919) % self.companies  # spread a company's records over the feed
        words = [PENALTY_WORDS[seq % 2], "罚款"] if seq % 3 else [PENALTY_WORDS[seq % 2]]
        fine = _FINES[1 + seq % 5] if "罚款" in words else None
        decided = self.today - dt.timedelta(days=3 + seq % 77)
        return PenaltyDraft(
            seq=seq, record_id=f"{self.code}-CF-{seq:08d}", subject_name=company_name(company),
            uscc=synthetic_uscc(company), decision_no=f"津南{self.abbreviation}罚〔{decided.year}〕{seq:07d}号",
            violation_type=_TYPES[seq % 4], facts="经查，当事人存在上述违法行为，事实清楚，证据确凿。",
            legal_basis="《中华人民共和国行政处罚法》第二十八条", penalties=words, content="、".join(words),
            fine_wanyuan=fine, decision_date=decided.isoformat(),
            validity_end=(decided + dt.timedelta(days=365)).isoformat(),
        )  # fmt: skip


def synthetic_book(code: str, name: str, uscc: str, count: int, *, subject_fields=("name", "uscc"),
                   abbreviation: str = "") -> AgencyBook:  # fmt: skip
    """An AgencyBook whose penalty list is ``count`` lazily rendered records (no malformed ones)."""
    return AgencyBook(code=code, name=name, uscc=uscc, subject_fields=tuple(subject_fields), malformed_every=0,
                      penalties=LazyPenalties(code, count, abbreviation=abbreviation))  # type: ignore[arg-type]  # fmt: skip


# --- scenario 4: a reviewer's database, row by row as the hub stores it ------------------------------------
# Companies, licences and violations in the proportions (1 : 2 : 5). Counts per company
# are skewed (15 % have no violation, a few have 18), payloads are complete canonical records
# (they validate as LicenceGrant / ViolationRecord), severities follow the penalties the way
# contracts.mapping.default_severity derives them, and records arrive in time order across all
# companies — so, as in a hub fed by pulls over years, a company's rows are scattered through
# the tables and many are past their publication period, repaired or superseded.

#: per block of 20 companies, a permutation of these counts: exactly 2 licences and 5 violations on average
_LICENCES_PER_COMPANY = (0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 4, 4, 6)
_VIOLATIONS_PER_COMPANY = (0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 12, 18)
_STRIDES = (7_368_787, 7_368_791, 7_368_811)  # primes: slot order → arrival order, a full permutation

#: approval items (contracts/samples/licences.jsonl): code, name, section, industry, category, document,
#: certificate, content, years valid (None: long-term)
_ITEMS = (
    ("NK-SC-001", "食品经营许可", "市场准入科", "餐饮", "普通", "食品经营许可决定书", "食品经营许可证",
     "预包装食品销售，热食类食品制售", 5),
    ("NK-GA-010", "旅馆业特种行业许可证核发", "社会事务科", "旅馆业", "特许", "旅馆业特种行业许可证核发决定书",
     "特种行业许可证", "旅馆住宿服务", None),
    ("NK-JT-020", "道路运输经营许可", "交通建设科", "道路运输", "普通", "道路运输经营许可决定书",
     "道路运输经营许可证", "普通货运", 4),
    ("NK-GH-030", "建设工程规划许可", "建设项目科", "建设工程", "核准", "建设工程规划许可决定书",
     "建设工程规划许可证", "南开区地块办公楼建设", 1),
    ("NK-GA-011", "公众聚集场所投入使用、营业前消防安全检查", "社会事务科", "公共娱乐场所", "认可",
     "公众聚集场所投入使用、营业前消防安全检查决定书", "公众聚集场所投入使用营业前消防安全检查合格证",
     "KTV歌舞娱乐场所", None),
    ("NK-JT-021", "机动车维修经营备案", "交通建设科", "机动车维修", "登记", "机动车维修经营备案决定书",
     "机动车维修经营备案", "二类机动车维修", None),
    ("NK-SC-002", "企业设立登记", "市场准入科", "信息技术", "登记", "企业设立登记决定书", "营业执照",
     "软件开发、信息技术咨询", None),
)  # fmt: skip
_BUREAU, _BUREAU_USCC = "天津市南开区行政审批局", "11120104MB01234578"
#: lifecycle of a licence, per 100: granted, changed, cancelled, revoked, invalidated
_LIFECYCLES = ((84, "granted", "有效", None), (91, "changed", "有效", "许可事项变更"),
               (96, "cancelled", "注销", "申请人申请注销"), (98, "revoked", "吊销", "因违法经营被吊销"),
               (100, "invalidated", "撤销", "以欺骗手段取得许可，依法撤销"))  # fmt: skip
#: violation types and facts per agency; the agency's name and USCC come from the registry
_AGENCY_TYPES = {
    "SCJG": ("未按规定公示年度报告", "销售超过保质期的食品", "未取得食品经营许可从事食品经营活动"),
    "GAFJ": ("旅馆未按规定登记住宿旅客信息", "娱乐场所未按规定安装运行监控设备"),
    "JJZD": ("违规停放车辆", "货运车辆超限超载", "驾驶人未按规定参加年度审验"),
    "GSJ": ("未按期办理纳税申报", "未按规定开具发票"),
    "DSJ": ("未按期申报缴纳社会保险费", "未按规定代扣代缴个人所得税"),
    "XFZD": ("消防设施未保持完好有效", "占用、堵塞、封闭疏散通道"),
    "GHFJ": ("未按建设工程规划许可证的规定进行建设", "未取得建设工程规划许可证进行建设"),
}
#: penalty combinations, per 100: (limit, CF_CFLB, its JSON, CF_NR, the severity the hub derives from it)
_PENALTIES = tuple(
    (limit, list(words), canonical_json(list(words)), "、".join(words),
     default_severity(tuple(PenaltyType(w) for w in words)).value)
    for limit, words in ((30, ("警告",)), (52, ("罚款",)), (66, ("警告", "罚款")), (74, ("通报批评",)),
                         (86, ("罚款", "没收违法所得")), (92, ("罚款", "暂扣许可证件")), (96, ("罚款", "责令停产停业")),
                         (98, ("吊销许可证件",)), (100, ("罚款", "限制开展生产经营活动")))
)  # fmt: skip
#: adapters.base.canonical_json's settings, one encoder for millions of rows (json.dumps builds one per call)
_canonical = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode
_SURNAMES, _GIVEN = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗", ("伟", "芳", "娜", "敏", "静", "强", "磊", "军", "洋", "勇")
LICENCE_COLUMNS = ("id", "decision_no", "licence_no", "company_id", "approval_item", "bureau_section", "category",
                   "industry", "lifecycle", "decision_date", "valid_from", "valid_to", "version", "digest",
                   "payload", "created_at", "updated_at")  # fmt: skip
VIOLATION_COLUMNS = ("id", "source_agency", "agency_record_id", "company_id", "identity_status", "subject_name",
                     "uscc", "decision_no", "decision_date", "severity", "penalty_types", "fine", "confiscated",
                     "validity_end", "publication_end", "repair_status", "repair_date", "version", "digest",
                     "payload", "created_at", "updated_at")  # fmt: skip
COMPANY_COLUMNS = ("id", "uscc", "name", "category", "org_code", "legal_rep", "created_at", "updated_at")


def _counts(table: tuple[int, ...], salt: int, companies: int) -> array:
    """Start of each company's slots (and the total last): company i owns slots starts[i] … starts[i+1]-1."""
    starts, total = array("q", [0]), 0
    for i in range(companies):
        total += table[(i * salt + i // 20) % 20]
        starts.append(total)
    return starts


def _stride(total: int) -> int:
    return next(s for s in _STRIDES if total % s)


def _legal_rep(i: int) -> str:
    return _SURNAMES[i % 20] + _GIVEN[(i // 20) % 10] + _GIVEN[(i // 200) % 10]


class ReviewDataset:
    """Rows for ``companies`` companies and their licences and violations, any slice of them on demand.

    Licence n and violation n are the n-th to arrive (ids n + 1, decision dates rising with n);
    each arrival is one slot of one company, through a fixed permutation, so the rows of one
    company are spread over the whole table. Values are Python objects (dates, Decimals, JSON
    text); bench.bulkload renders them for each database.
    """

    def __init__(self, companies: int, *, today: dt.date | None = None, now: dt.datetime | None = None) -> None:
        from contracts.registry import load_registry

        self.companies = companies
        self.today, self.now = today or dt.date.today(), now or dt.datetime.now(dt.UTC)
        self.usccs = [synthetic_uscc(i) for i in range(companies)]
        self._licence_starts = _counts(_LICENCES_PER_COMPANY, 7, companies)
        self._violation_starts = _counts(_VIOLATIONS_PER_COMPANY, 13, companies)
        self.licences, self.violations = self._licence_starts[-1], self._violation_starts[-1]
        agencies = load_registry()
        self._agencies = [(code, agencies[code].name_zh, agencies[code].uscc, types)
                          for code, types in _AGENCY_TYPES.items()]  # fmt: skip

    def counts(self, company: int) -> tuple[int, int]:
        """How many licences and violations company ``company`` (0-based) has."""
        lic, vio = self._licence_starts, self._violation_starts
        return lic[company + 1] - lic[company], vio[company + 1] - vio[company]

    def company_rows(self, start: int, stop: int) -> Iterator[tuple]:
        for i in range(start, min(stop, self.companies)):
            uscc = self.usccs[i]
            yield (i + 1, uscc, company_name(i), "法人及非法人组织", uscc[8:17], _legal_rep(i), self.now, self.now)

    def licence_rows(self, start: int, stop: int) -> Iterator[tuple]:
        stride, total, starts = _stride(self.licences or 1), self.licences, self._licence_starts
        for n in range(start, min(stop, total)):
            company = bisect_right(starts, (n * stride) % total) - 1
            h = (n * 2654435761) & 0xFFFFFFFF
            code, name, section, industry, category, document, certificate, content, years = _ITEMS[h % 7]
            decided = self.today - dt.timedelta(days=int(3000 * (1 - n / total)) + 1)
            until = LONG_TERM if years is None else dt.date(decided.year + years, decided.month, 1) - dt.timedelta(days=1)
            roll = (h >> 8) % 100
            _, lifecycle, status, reason = next(entry for entry in _LIFECYCLES if roll < entry[0])
            number = f"津南审批许字〔{decided.year}〕{n + 1:07d}号"
            payload = {
                "XK_XDR_MC": company_name(company), "XK_XDR_LB": "法人及非法人组织", "XK_XDR_SHXYM": self.usccs[company],
                "XK_FRDB": _legal_rep(company), "XK_XKWS": document, "XK_WSH": number, "XK_XKLB": category,
                "XK_XKZS": certificate, "XK_XKBH": f"NK{decided.year}{n + 1:07d}", "XK_NR": content,
                "XK_JDRQ": decided.isoformat(), "XK_YXQZ": decided.isoformat(), "XK_YXQZI": until.isoformat(),
                "XK_XKJG": _BUREAU, "XK_XKJGDM": _BUREAU_USCC, "XK_ZT": status, "XK_LYDW": _BUREAU,
                "XK_LYDWDM": _BUREAU_USCC, "approval_item": code, "approval_item_name": name,
                "bureau_section": section, "industry": industry, "lifecycle": lifecycle,
            }  # fmt: skip
            if reason:
                changed = min(self.today, decided + dt.timedelta(days=30 + (h >> 16) % 700))
                payload["lifecycle_date"], payload["lifecycle_reason"] = changed.isoformat(), reason
            text = _canonical(payload)
            yield (n + 1, number, payload["XK_XKBH"], company + 1, code, section, category, industry, lifecycle,
                   decided, decided, until, 1, sha256(text.encode()).hexdigest(), text, self.now, self.now)  # fmt: skip

    def violation_rows(self, start: int, stop: int) -> Iterator[tuple]:
        stride, total, starts = _stride(self.violations or 1), self.violations, self._violation_starts
        for n in range(start, min(stop, total)):
            company = bisect_right(starts, (n * stride) % total) - 1
            h = (n * 2654435761) & 0xFFFFFFFF
            code, agency, agency_uscc, types = self._agencies[h % 7]
            roll = (h >> 4) % 100
            _, penalties, penalties_json, content, severity = next(p for p in _PENALTIES if roll < p[0])
            # arrivals are in time order, weighted to recent years (P(age < d) = sqrt(d / 5 years))
            decided = self.today - dt.timedelta(days=int(1825 * (1 - n / total) ** 2))
            fine = _FINES[1 + (h >> 12) % 5] if "罚款" in penalties else None
            gains = Decimal((h >> 16) % 50 + 1) / 10 if "没收违法所得" in penalties else None
            stated_end = decided + dt.timedelta(days=180) if (h >> 20) % 100 < 15 else None  # CF_GSJZQ given
            repair, repaired = (h >> 24) % 100, decided + dt.timedelta(days=120)  # 8 % repaired, 2 % applied for
            if repair < 8 and repaired <= self.today:
                repair_status = "repaired"
            else:
                repair_status, repaired = ("applied" if repair < 10 else "none"), None
            violation_type = types[(h >> 8) % len(types)]
            number = f"津南{code}罚〔{decided.year}〕{n + 1:07d}号"
            record_id = f"{code}-CF-{n + 1:09d}"
            payload = {
                "CF_XDR_MC": company_name(company), "CF_XDR_LB": "法人及非法人组织", "CF_XDR_SHXYM": self.usccs[company],
                "CF_FRDB": _legal_rep(company), "CF_WSH": number, "CF_WFXW": violation_type,
                "CF_SY": f"经查，当事人{violation_type}，事实清楚，证据确凿。", "CF_YJ": "《中华人民共和国行政处罚法》第二十八条",
                "CF_CFLB": penalties, "CF_NR": content, "CF_JDRQ": decided.isoformat(),
                "CF_YXQ": (decided + dt.timedelta(days=365)).isoformat(), "CF_CFJG": agency, "CF_CFJGDM": agency_uscc,
                "CF_SJLY": agency, "CF_SJLYDM": agency_uscc, "source_agency": code, "agency_record_id": record_id,
                "severity": severity, "repair_status": repair_status,
            }  # fmt: skip
            if fine is not None:
                payload["CF_NR_FK"] = f"{fine}"
            if gains is not None:
                payload["CF_NR_WFFF"] = f"{gains}"
            if stated_end is not None:
                payload["CF_GSJZQ"] = stated_end.isoformat()
            if repaired is not None:
                payload["repair_date"] = repaired.isoformat()
            text = _canonical(payload)
            yield (n + 1, code, record_id, company + 1, "linked", company_name(company), self.usccs[company], number,
                   decided, severity, penalties_json, fine, gains, decided + dt.timedelta(days=365),
                   stated_end, repair_status, repaired, 1, sha256(text.encode()).hexdigest(), text, self.now,
                   self.now)  # fmt: skip
