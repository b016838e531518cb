"""The pre-approval check: GREEN / AMBER / RED with every reason, stored as evidence.

The rules are data (contracts/verdict_rules.toml). Only penalties that still count are judged
(hub.publication: not repaired, within their publication window). Freshness is part of the
verdict: an agency expected to send data whose last successful pull is older than the bound —
or that was never pulled — is named, and the verdict is raised to at least the policy's
``stale_verdict``, because missing data must never read as a clean record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tomllib
from collections.abc import Mapping
from enum import IntEnum
from pathlib import Path
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session

from contracts.validation import describe_errors
from contracts.registry import AgencySpec
from hub import audit
from hub.clock import utcnow
from hub.errors import ConfigurationError
from hub.history import CompanyHistory, HistoryFilter, history_from_rows, history_reads
from hub.models import Agency, Company, ComplianceCheck, Licence, LicenceRevision
from hub.pipelined import pipelines, reading_connection
from hub.publication import add_months, today_in_china

__all__ = [
    "RULES_FILE",
    "AgencyFreshness",
    "CheckResult",
    "Reason",
    "Rule",
    "VerdictRules",
    "agency_freshness",
    "load_rules",
    "run_check",
]

RULES_FILE = Path(__file__).resolve().parent.parent / "contracts" / "verdict_rules.toml"
VerdictName = Literal["GREEN", "AMBER", "RED"]


class _Rank(IntEnum):
    GREEN = 0
    AMBER = 1
    RED = 2


class Rule(BaseModel):
    """One condition and the verdict it leads to; empty lists mean 'any'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    subject: Literal["violation", "licence"]
    verdict: VerdictName
    text: str
    severity: list[str] = Field(default_factory=list)
    penalty_types: list[str] = Field(default_factory=list)
    agencies: list[str] = Field(default_factory=list)
    lifecycle: list[str] = Field(default_factory=list)
    lookback_months: int | None = Field(None, ge=1)


class ItemRules(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    disable: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)


class FreshnessPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: list[str] = Field(default_factory=lambda: ["vertical"])
    stale_verdict: VerdictName = "AMBER"


class VerdictRules(BaseModel):
    """The whole rules file, plus the digest of its bytes (stored with every check)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    publication: dict[str, int]
    freshness: FreshnessPolicy = Field(default_factory=FreshnessPolicy)
    rules: list[Rule]
    items: dict[str, ItemRules] = Field(default_factory=dict)
    digest: str = ""

    def for_item(self, approval_item: str | None) -> list[Rule]:
        """Default rules with the approval item's replacements, additions and removals applied."""
        item = self.items.get(approval_item or "", ItemRules())
        replaced = {r.id: r for r in item.rules}
        out = [replaced.pop(r.id, r) for r in self.rules if r.id not in item.disable]
        return out + list(replaced.values())


def load_rules(path: Path | None = None) -> VerdictRules:
    """Read and validate the verdict rules file (contracts/verdict_rules.toml by default)."""
    path = path or RULES_FILE
    try:
        raw = path.read_bytes()
        data = tomllib.loads(raw.decode("utf-8"))
        return VerdictRules.model_validate({**data, "digest": hashlib.sha256(raw).hexdigest()})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"verdict rules {path}: cannot read: {exc}") from exc
    except ValidationError as exc:
        raise ConfigurationError(f"verdict rules {path.name}: {describe_errors(exc)}") from exc


class Reason(BaseModel):
    """Why the verdict is what it is: which rule, on which record, from which agency."""

    rule: str
    verdict: VerdictName
    text: str
    record: str | None = None
    agency: str | None = None
    date: dt.date | None = None


class AgencyFreshness(BaseModel):
    code: str
    name: str
    last_pull_at: dt.datetime | None
    age_hours: float | None
    stale: bool


class CheckResult(BaseModel):
    check_id: int
    case_id: str
    uscc: str | None
    company: str
    approval_item: str | None
    verdict: VerdictName
    reasons: list[Reason]
    freshness: list[AgencyFreshness]
    stale_agencies: list[str]
    freshness_hours: float
    rules_version: str
    as_of: dt.date
    checked_by: str
    checked_at: dt.datetime


# statements built once: a check runs them on every request
_LAST_PULLS = sa.select(Agency.__table__.c.code, Agency.__table__.c.last_pull_at)
# A licence's earlier revisions that ended it otherwise than it stands now: revoked (吊销/撤销),
# then cancelled (注销) as the law requires next, must still count as revoked.
_LR, _LL = LicenceRevision.__table__, Licence.__table__
_EARLIER_ENDINGS = (
    sa.select(_LL.c.decision_no, _LR.c.lifecycle, _LR.c.payload["lifecycle_date"].as_string().label("lifecycle_date"),
              _LL.c.decision_date)
    .select_from(_LR.join(_LL, _LL.c.id == _LR.c.licence_id))
    .where(_LL.c.company_id == sa.bindparam("cid"), _LR.c.lifecycle != "granted", _LR.c.lifecycle != "changed",
           _LR.c.lifecycle != _LL.c.lifecycle)  # no IN list: pipelined reads take no expanding parameters
    .distinct()
)  # fmt: skip
_STORE_CHECK = sa.insert(ComplianceCheck.__table__).returning(ComplianceCheck.__table__.c.id)
# Where reads share a round trip (PostgreSQL), the check's id is drawn with them, so that its row
# can go with the audit entry that names it: a check then waits on as many round trips as a history.
_NEXT_CHECK_ID = sa.select(sa.func.nextval(sa.func.pg_get_serial_sequence(ComplianceCheck.__tablename__, "id"))
                           .label("id"))  # fmt: skip


def agency_freshness(session: Session, agencies: Mapping[str, AgencySpec], *, bound_hours: float,
                     kinds: list[str] | None = None, now: dt.datetime | None = None) -> list[AgencyFreshness]:  # fmt: skip
    """Age of each expected agency's last successful pull; stale when older than the bound or never."""
    now = now or utcnow()
    last_pulls = dict(reading_connection(session).execute(_LAST_PULLS).all())
    return _freshness(last_pulls, agencies, bound_hours=bound_hours, kinds=kinds, now=now)


def _freshness(last_pulls: Mapping[str, dt.datetime | None], agencies: Mapping[str, AgencySpec], *,
               bound_hours: float, kinds: list[str] | None, now: dt.datetime) -> list[AgencyFreshness]:  # fmt: skip
    out = []
    for spec in agencies.values():
        if kinds is not None and spec.kind not in kinds:
            continue
        last = last_pulls.get(spec.code)
        age = None if last is None else (now - last).total_seconds() / 3600
        out.append(AgencyFreshness(code=spec.code, name=spec.name_zh, last_pull_at=last,
                                   age_hours=None if age is None else round(age, 2),
                                   stale=age is None or age > bound_hours))  # fmt: skip
    return out


def _violation_reasons(history: CompanyHistory, rules: list[Rule]) -> list[Reason]:
    out = []
    for v in history.violations:  # only those that count: the history hides the others
        for rule in (r for r in rules if r.subject == "violation"):
            if rule.severity and v.severity not in rule.severity:
                continue
            if rule.penalty_types and not set(rule.penalty_types) & set(v.penalty_types):
                continue
            if rule.agencies and v.agency not in rule.agencies:
                continue
            out.append(Reason(rule=rule.id, verdict=rule.verdict, text=rule.text,
                              record=f"{v.decision_no} ({v.agency} #{v.agency_record_id})",
                              agency=v.agency, date=v.decision_date))  # fmt: skip
    return out


def _licence_reasons(history: CompanyHistory, earlier_endings: list, rules: list[Rule], today: dt.date) -> list[Reason]:
    out = []
    endings = [(lic.decision_no, lic.lifecycle, lic.lifecycle_date or lic.decision_date) for lic in history.licences]
    endings += [(e.decision_no, e.lifecycle, dt.date.fromisoformat(e.lifecycle_date) if e.lifecycle_date
                 else e.decision_date) for e in earlier_endings]  # fmt: skip
    for decision_no, lifecycle, when in endings:
        for rule in (r for r in rules if r.subject == "licence"):
            if rule.lifecycle and lifecycle not in rule.lifecycle:
                continue
            if rule.lookback_months and add_months(when, rule.lookback_months) < today:
                continue
            out.append(Reason(rule=rule.id, verdict=rule.verdict, text=rule.text,
                              record=decision_no, agency=None, date=when))  # fmt: skip
    return out


def run_check(session: Session, *, company: Company | sa.Row, case_id: str, actor: str, rules: VerdictRules,
              agencies: Mapping[str, AgencySpec], freshness_hours: float, approval_item: str | None = None,
              now: dt.datetime | None = None, commit: bool = False) -> CheckResult:  # fmt: skip
    """Judge one company for one approval case, store the check with its inputs, and audit it.

    Everything is written in the caller's transaction, which ``commit`` then commits. On
    PostgreSQL the check waits on the same round trips as a reviewer's history: the freshness,
    the check's id and the audit log's lock and head are read with the history
    (hub.audit.select_with_head), and the check's row, its audit entry and the COMMIT go in one
    round trip (hub.audit.append_many). The writers' lock is so held while the verdict is judged.

    Args:
        session: the open transaction.
        company: the applicant.
        case_id: the approval case this check is evidence for.
        actor: who asked (a reviewer's name), for the stored check and the audit log.
        rules: from load_rules().
        agencies: the registry; agencies of the policy's kinds must have fresh data.
        freshness_hours: the bound (Settings.freshness_hours).
        approval_item: the approval item applied for, selecting per-item rules.
        now: the time of the check (default: now).
    """
    if not case_id or not case_id.strip():
        raise ConfigurationError("a check must cite an approval case id")
    now = now or utcnow()
    today = today_in_china(now)
    conn = reading_connection(session)
    everything = HistoryFilter(include_hidden=True)
    reads = [*history_reads(company, everything), (_LAST_PULLS, {}), (_EARLIER_ENDINGS, {"cid": company.id})]
    if pipelines(conn):
        reads.append((_NEXT_CHECK_ID, {}))
    # the audit log's lock and head too: the entry below then waits on no read of its own
    (licence_rows, violation_rows, last_pulls, earlier_endings, *drawn), head = audit.select_with_head(conn, reads)
    history = history_from_rows(company, everything, licence_rows, violation_rows, today=today,
                                months=rules.publication)  # fmt: skip
    counted = history.model_copy(update={"violations": [v for v in history.violations if v.standing == "counts"]})
    active = rules.for_item(approval_item)
    reasons = _violation_reasons(counted, active) + _licence_reasons(history, earlier_endings, active, today)
    fresh = _freshness(dict(last_pulls), agencies, bound_hours=freshness_hours, kinds=rules.freshness.kinds, now=now)
    stale = [f for f in fresh if f.stale]
    for f in stale:
        when = "has never been pulled" if f.last_pull_at is None else f"was last pulled {f.age_hours:g} h ago"
        reasons.append(Reason(rule="stale-data", verdict=rules.freshness.stale_verdict, agency=f.code,
                              text=f"{f.name} ({f.code}) {when}, beyond the {freshness_hours:g} h bound: "
                                   "its data may be missing, not clean"))  # fmt: skip
    verdict = max((_Rank[r.verdict] for r in reasons), default=_Rank.GREEN).name
    reasons.sort(key=lambda r: (-_Rank[r.verdict], r.rule, r.record or "", r.agency or ""))
    inputs = {
        "rules_version": rules.version, "rules_digest": rules.digest, "approval_item": approval_item,
        "as_of": today.isoformat(), "freshness_hours": freshness_hours,
        "violations": [{"id": v.id, "agency": v.agency, "record": v.agency_record_id, "severity": v.severity,
                        "standing": v.standing, "published_until": v.published_until.isoformat(),
                        "repair_status": v.repair_status} for v in history.violations],
        "licences": [{"decision_no": lic.decision_no, "lifecycle": lic.lifecycle} for lic in history.licences],
        "earlier_endings": [{"decision_no": e.decision_no, "lifecycle": e.lifecycle} for e in earlier_endings],
        "freshness": [f.model_dump(mode="json") for f in fresh],
    }  # fmt: skip
    case = case_id.strip()
    stored = {"case_id": case, "company_id": company.id, "approval_item": approval_item, "verdict": verdict,
              "reasons": [r.model_dump(mode="json") for r in reasons], "inputs": inputs, "checked_by": actor,
              "checked_at": now}  # fmt: skip
    if drawn:
        check_id = drawn[0][0].id
        written = [(_STORE_CHECK, {"id": check_id, **stored})]
    else:
        check_id, written = conn.execute(_STORE_CHECK, stored).scalar_one(), []
    audit.append(session, actor=actor, action="review.check", subject=f"company:{company.uscc or company.id}",
                 detail={"case": case, "check_id": check_id, "verdict": verdict,
                         "approval_item": approval_item, "stale": [f.code for f in stale]},
                 commit=commit, written_with=written, head=head)  # fmt: skip
    return CheckResult(check_id=check_id, case_id=case, uscc=company.uscc, company=company.name,
                       approval_item=approval_item, verdict=verdict, reasons=reasons, freshness=fresh,
                       stale_agencies=[f.code for f in stale], freshness_hours=freshness_hours,
                       rules_version=rules.version, as_of=today, checked_by=actor, checked_at=now)  # fmt: skip
