"""The canonical 双公示 records every agency's dialect is mapped to.

Field names are English; each field's alias is its 双公示 code (XK_… for licences,
CF_… for penalties), which is what files, partners and JSON Schema use. Amounts are in
万元 (10,000 yuan) as exact decimals; dates are dates; 2099-12-31 means long-term.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from contracts.fields import CLOCK_SKEW, Date, FreeText, Line, WanYuan, latest_plausible_date, optional_text, text
from contracts.uscc import PLACEHOLDER, InvalidIdentifier, validate_org_code, validate_reg_no, validate_uscc

CONTRACT_VERSION = "1.0.0"
LONG_TERM = dt.date(2099, 12, 31)

__all__ = [
    "CONTRACT_VERSION",
    "LONG_TERM",
    "LicenceCategory",
    "LicenceGrant",
    "Lifecycle",
    "PenaltyType",
    "RepairStatus",
    "Severity",
    "SubjectCategory",
    "ViolationRecord",
    "default_severity",
]


class SubjectCategory(StrEnum):
    ORGANISATION = "法人及非法人组织"
    NATURAL_PERSON = "自然人"
    INDIVIDUAL_BUSINESS = "个体工商户"


class LicenceCategory(StrEnum):
    ORDINARY = "普通"
    FRANCHISE = "特许"
    RECOGNITION = "认可"
    APPROVAL = "核准"
    REGISTRATION = "登记"
    OTHER = "其他"


class Lifecycle(StrEnum):
    GRANTED = "granted"
    CHANGED = "changed"
    CANCELLED = "cancelled"
    REVOKED = "revoked"
    INVALIDATED = "invalidated"


class PenaltyType(StrEnum):
    """Penalty categories, declared light to heavy (the order is used for ranking)."""

    WARNING = "警告"
    REPRIMAND = "通报批评"
    FINE = "罚款"
    CONFISCATE_GAINS = "没收违法所得"
    CONFISCATE_PROPERTY = "没收非法财物"
    SUSPEND_LICENCE = "暂扣许可证件"
    DOWNGRADE = "降低资质等级"
    REVOKE_LICENCE = "吊销许可证件"
    RESTRICT_BUSINESS = "限制开展生产经营活动"
    STOP_BUSINESS = "责令停产停业"
    CLOSURE = "责令关闭"
    TRADE_BAN = "限制从业"
    DETENTION = "行政拘留"


class Severity(StrEnum):
    """NDRC Order 36 classes; each has a minimum and maximum publication period."""

    MINOR = "minor"
    ORDINARY = "ordinary"
    SERIOUS = "serious"


class RepairStatus(StrEnum):
    NONE = "none"
    APPLIED = "applied"
    REPAIRED = "repaired"


#: Heaviest penalty → severity class, when the agency does not classify the record itself.
_SERIOUS = frozenset({
    PenaltyType.REVOKE_LICENCE, PenaltyType.RESTRICT_BUSINESS, PenaltyType.STOP_BUSINESS,
    PenaltyType.CLOSURE, PenaltyType.TRADE_BAN, PenaltyType.DETENTION,
})  # fmt: skip
_MINOR = frozenset({PenaltyType.WARNING, PenaltyType.REPRIMAND})


def default_severity(penalties: tuple[PenaltyType, ...]) -> Severity:
    """Order 36 class from the heaviest penalty, used when the agency gives none."""
    if any(p in _SERIOUS for p in penalties):
        return Severity.SERIOUS
    if all(p in _MINOR for p in penalties):
        return Severity.MINOR
    return Severity.ORDINARY


Text = text(4000, free=True)
ShortText = text(500)


class _Record(BaseModel):
    model_config = ConfigDict(populate_by_name=True, str_strip_whitespace=True, extra="forbid", frozen=True)


def _code(value: str) -> str:
    return validate_uscc(value)


def _not_future(value: dt.date | None, info: ValidationInfo) -> dt.date | None:
    latest = latest_plausible_date(info)
    if value is not None and value > latest:
        raise ValueError(f"{value} is in the future (today in China is {latest - CLOCK_SKEW})")
    return value


def _not_before_decision(value: dt.date | None, info: ValidationInfo, what: str, decision_code: str) -> None:
    decided = info.data.get("decision_date")
    if value is not None and decided is not None and value < decided:
        raise ValueError(f"{what} {value} is before the decision date {decision_code} {decided}")


def _optional(check):
    def run(value: str | None) -> str | None:
        return check(value) if value else None

    return run


USCC = Annotated[str, AfterValidator(_code)]
RegNo = Annotated[str | None, AfterValidator(_optional(validate_reg_no))]
OrgCode = Annotated[str | None, AfterValidator(_optional(validate_org_code))]


class _Subject(_Record):
    """Checks shared by both records: who the subject is and how it is identified.

    Field order matters: a validator sees only the fields declared before it, so the
    registration number precedes the USCC (the placeholder code needs it).
    """

    @field_validator("uscc", mode="after", check_fields=False)
    @classmethod
    def _subject_code(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value:
            code = validate_uscc(value, reg_no=info.data.get("reg_no"))
            category = info.data.get("subject_category")
            if code == PLACEHOLDER and category not in (None, SubjectCategory.INDIVIDUAL_BUSINESS):
                # GB 32100 reserves it for an individual business still without a code; for an
                # organisation it names no one, and its records would join the wrong company.
                raise InvalidIdentifier(f"placeholder {PLACEHOLDER} stands only for a 个体工商户 (individual business), "
                                        f"not a {category.value}")  # fmt: skip
            return code
        legacy = info.data.get("org_code") or info.data.get("reg_no")
        if info.data.get("subject_category") == SubjectCategory.ORGANISATION and not legacy:
            # Older agency data may carry only a legacy id; that is linked later, never guessed.
            raise InvalidIdentifier("is required for 法人及非法人组织 (organisations) without a legacy id")
        return None



class LicenceGrant(_Subject):
    """One administrative licence decision (行政许可), with the hub's lifecycle and routing facts."""

    subject_name: ShortText = Field(alias="XK_XDR_MC", description="行政相对人名称 subject name")
    subject_category: SubjectCategory = Field(alias="XK_XDR_LB", description="行政相对人类别")
    reg_no: RegNo = Field(None, alias="XK_XDR_GSZC", description="工商注册号 (15 digits)")
    org_code: OrgCode = Field(None, alias="XK_XDR_ZZJG", description="组织机构代码 (9 characters)")
    uscc: str | None = Field(None, validate_default=True, alias="XK_XDR_SHXYM", description="统一社会信用代码 (M for organisations)")
    tax_reg_no: Line = Field(None, alias="XK_XDR_SWDJ", description="税务登记号")
    public_institution_no: Line = Field(None, alias="XK_XDR_SYDW", description="事业单位证书号")
    social_org_no: Line = Field(None, alias="XK_XDR_SHZZ", description="社会组织登记证号")
    legal_rep: optional_text(200) = Field(None, alias="XK_FRDB", description="法定代表人")
    decision_doc_name: ShortText = Field(alias="XK_XKWS", description="行政许可决定文书名称")
    decision_no: ShortText = Field(alias="XK_WSH", description="行政许可决定文书号")
    licence_category: LicenceCategory = Field(alias="XK_XKLB", description="许可类别")
    certificate_name: Line = Field(None, alias="XK_XKZS", description="许可证书名称")
    licence_no: optional_text(200) = Field(None, alias="XK_XKBH", description="许可编号")
    content: Text = Field(alias="XK_NR", description="许可内容")
    decision_date: Date = Field(alias="XK_JDRQ", description="许可决定日期")
    valid_from: Date = Field(alias="XK_YXQZ", description="有效期自")
    valid_to: Date = Field(alias="XK_YXQZI", description="有效期至 (2099-12-31 = long-term)")
    authority: ShortText = Field(alias="XK_XKJG", description="许可机关")
    authority_uscc: USCC = Field(alias="XK_XKJGDM", description="许可机关统一社会信用代码")
    status: Line = Field(None, alias="XK_ZT", description="当前状态")
    source_unit: ShortText = Field(alias="XK_LYDW", description="数据来源单位")
    source_unit_uscc: USCC = Field(alias="XK_LYDWDM", description="数据来源单位统一社会信用代码")
    remarks: FreeText = Field(None, alias="BZ", description="备注")
    # Hub extensions: which approval item and bureau section, and where the licence stands now.
    approval_item: text(100) = Field(alias="approval_item", description="审批事项编码")
    approval_item_name: Line = Field(None, alias="approval_item_name", description="审批事项名称")
    bureau_section: text(200) = Field(alias="bureau_section", description="审批局科室")
    industry: optional_text(100) = Field(None, alias="industry", description="行业 (routing)")
    lifecycle: Lifecycle = Field(Lifecycle.GRANTED, alias="lifecycle")
    lifecycle_date: Date | None = Field(None, validate_default=True, alias="lifecycle_date")
    lifecycle_reason: FreeText = Field(None, alias="lifecycle_reason")

    @property
    def is_long_term(self) -> bool:
        return self.valid_to == LONG_TERM

    @field_validator("valid_to")
    @classmethod
    def _not_before_start(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("valid_from")
        if start and value < start:
            raise ValueError(f"valid to {value} is before valid from {start}")
        return value

    @field_validator("decision_date")
    @classmethod
    def _decided_by_now(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        return _not_future(value, info)

    @field_validator("lifecycle_date", mode="after")
    @classmethod
    def _dated_change(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        state = info.data.get("lifecycle")
        if state and state != Lifecycle.GRANTED and value is None:
            raise ValueError(f"is required when lifecycle is {state.value}")
        # a licence cannot be changed, cancelled or revoked before it was granted: a typo (2016 for 2026)
        # would otherwise date the revocation before everything the verdict looks at
        _not_before_decision(value, info, "lifecycle date", "XK_JDRQ")
        return value


class ViolationRecord(_Subject):
    """One administrative penalty decision (行政处罚) as reported by one agency."""

    subject_name: ShortText = Field(alias="CF_XDR_MC", description="行政相对人名称")
    subject_category: SubjectCategory = Field(alias="CF_XDR_LB", description="行政相对人类别")
    reg_no: RegNo = Field(None, alias="CF_XDR_GSZC", description="工商注册号")
    org_code: OrgCode = Field(None, alias="CF_XDR_ZZJG", description="组织机构代码")
    uscc: str | None = Field(None, validate_default=True, alias="CF_XDR_SHXYM", description="统一社会信用代码 (M for organisations)")
    tax_reg_no: Line = Field(None, alias="CF_XDR_SWDJ", description="税务登记号")
    public_institution_no: Line = Field(None, alias="CF_XDR_SYDW", description="事业单位证书号")
    social_org_no: Line = Field(None, alias="CF_XDR_SHZZ", description="社会组织登记证号")
    legal_rep: optional_text(200) = Field(None, alias="CF_FRDB", description="法定代表人")
    decision_no: ShortText = Field(alias="CF_WSH", description="行政处罚决定书文号")
    violation_type: ShortText = Field(alias="CF_WFXW", description="违法行为类型")
    facts: Text = Field(alias="CF_SY", description="违法事实")
    legal_basis: Text = Field(alias="CF_YJ", description="处罚依据")
    penalty_types: tuple[PenaltyType, ...] = Field(alias="CF_CFLB", min_length=1, description="处罚类别")
    content: Text = Field(alias="CF_NR", description="处罚内容")
    fine: WanYuan | None = Field(None, validate_default=True, alias="CF_NR_FK", description="罚款金额 (万元)")
    confiscated: WanYuan | None = Field(None, alias="CF_NR_WFFF", description="没收违法所得、没收非法财物的金额 (万元)")
    suspended_licence: Line = Field(None, alias="CF_NR_ZKDX", description="暂扣或吊销证照名称及编号")
    decision_date: Date = Field(alias="CF_JDRQ", description="处罚决定日期")
    validity_end: Date = Field(alias="CF_YXQ", description="处罚有效期")
    publication_end: Date | None = Field(None, alias="CF_GSJZQ", description="公示截止期")
    authority: ShortText = Field(alias="CF_CFJG", description="处罚机关")
    authority_uscc: USCC = Field(alias="CF_CFJGDM", description="处罚机关统一社会信用代码")
    source: ShortText = Field(alias="CF_SJLY", description="数据来源")
    source_uscc: USCC = Field(alias="CF_SJLYDM", description="数据来源单位统一社会信用代码")
    remarks: FreeText = Field(None, alias="BZ", description="备注")
    # Hub extensions: provenance and credit standing.
    source_agency: text(16) = Field(alias="source_agency", description="reporting agency code")
    agency_record_id: text(200) = Field(alias="agency_record_id", description="the agency's own record id")
    # None only as the default: the validator below derives the class from CF_CFLB, whichever name sent it
    severity: Severity = Field(None, validate_default=True, alias="severity",  # type: ignore[assignment]
                               description="NDRC Order 36 class; derived from CF_CFLB when not given")
    repair_status: RepairStatus = Field(RepairStatus.NONE, alias="repair_status")
    repair_date: Date | None = Field(None, validate_default=True, alias="repair_date")

    @field_validator("fine", mode="after")
    @classmethod
    def _fine_when_fined(cls, value: Decimal | None, info: ValidationInfo) -> Decimal | None:
        if value is None and PenaltyType.FINE in info.data.get("penalty_types", ()):
            raise ValueError("is required when CF_CFLB includes 罚款")
        return value

    @field_validator("decision_date")
    @classmethod
    def _decided_by_now(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        return _not_future(value, info)

    @field_validator("validity_end")
    @classmethod
    def _valid_from_decision(cls, value: dt.date, info: ValidationInfo) -> dt.date:
        _not_before_decision(value, info, "validity end", "CF_JDRQ")
        return value

    @field_validator("publication_end")
    @classmethod
    def _published_from_decision(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        # an end before the decision would hide a live penalty from the day it is recorded
        _not_before_decision(value, info, "publication end", "CF_JDRQ")
        return value

    @field_validator("severity", mode="before")
    @classmethod
    def _derived_severity(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            penalties = info.data.get("penalty_types")
            # without valid penalty types the record is refused for them; no second problem here
            return default_severity(penalties) if penalties else Severity.ORDINARY
        return value

    @field_validator("severity", mode="after")
    @classmethod
    def _not_lighter_than_penalty(cls, value: Severity, info: ValidationInfo) -> Severity:
        # Raised, not refused: a revocation, closure or detention is a serious breach whatever the label
        # (NDRC Order 36), and a record refused for its label would vanish from the verdict, failing
        # open; classed ordinary it would stop counting after 12 of its 36 months. Only serious is a
        # floor: a fine may be minor (a small one) or ordinary as the agency classes it, and a sector
        # may class anything heavier (domain: stricter rules).
        penalties = info.data.get("penalty_types") or ()
        if value != Severity.SERIOUS and any(p in _SERIOUS for p in penalties):
            return Severity.SERIOUS
        return value

    @field_validator("repair_date", mode="after")
    @classmethod
    def _dated_repair(cls, value: dt.date | None, info: ValidationInfo) -> dt.date | None:
        if value is None and info.data.get("repair_status") == RepairStatus.REPAIRED:
            raise ValueError("is required when repair_status is repaired")
        _not_before_decision(value, info, "repair date", "CF_JDRQ")
        return _not_future(value, info)

    @property
    def heaviest_penalty(self) -> PenaltyType:
        order = list(PenaltyType)
        return max(self.penalty_types, key=order.index)
