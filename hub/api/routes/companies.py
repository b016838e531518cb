"""Reviewer endpoints: search companies, read a history, run the pre-approval check.

Every lookup is appended to the audit log: who asked, about which company, for which case.
Each endpoint's database work runs in one worker-thread hop (hub.api.deps.in_worker_thread).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from hub import audit
from hub.api.auth import Permission, Principal
from hub.api.deps import RuntimeDep, SessionDep, in_worker_thread, require
from hub.api.errors import ApiError
from hub.api.params import Text
from hub.companies import find_companies
from hub.compliance import CheckResult, run_check
from hub.history import CompanyHistory, HistoryFilter, company_key, find_company, reviewed_history

router = APIRouter(prefix="/api/v1/companies", tags=["reviewers"])
Reviewer = Annotated[Principal, require(Permission.READ_COMPANIES)]
CaseId = Annotated[Text, Query(min_length=1, max_length=200, pattern=r"\S",
                              description="the approval case this lookup is for")]  # fmt: skip


class CompanyPublic(BaseModel):
    """A search hit."""

    key: str  # what /{key}/history and /{key}/check take: the USCC, else the hub's id:<n>
    uscc: str | None
    name: str
    category: str
    org_code: str | None
    reg_no: str | None


def _company(session, key: str) -> sa.Row:
    company = find_company(session, key)
    if company is None:
        raise ApiError(404, "company_not_found",
                       f"no single company has the identifier {key!r} (a USCC, organisation code, "
                       "registration number, or the key a search gave)")  # fmt: skip
    return company


@router.get("", response_model=list[CompanyPublic], summary="Find companies by USCC, legacy id or part of the name")
@in_worker_thread
def search(session: SessionDep, who: Reviewer,
           q: Annotated[Text, Query(min_length=1, max_length=200)],
           limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[CompanyPublic]:  # fmt: skip
    found = find_companies(session, q, limit=limit)
    audit.append(session, actor=who.actor, action="review.search", subject=f"query:{q[:200]}",
                 detail={"hits": [c.uscc or c.id for c in found]}, commit=True)  # fmt: skip
    return [CompanyPublic(key=company_key(c), uscc=c.uscc, name=c.name, category=c.category, org_code=c.org_code,
                          reg_no=c.reg_no) for c in found]  # fmt: skip


@router.get("/{key}/history", response_model=CompanyHistory, summary="A company's licences and violations")
@in_worker_thread
def history(
    session: SessionDep,
    request: Request,
    who: Reviewer,
    key: Text,
    case: Annotated[Text | None, Query(max_length=200, description="the approval case, for the audit log")] = None,
    agency: Annotated[Text | None, Query(max_length=16)] = None,
    severity: Annotated[str | None, Query(pattern="^(minor|ordinary|serious)$")] = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    include_hidden: Annotated[bool, Query(description="auditors only: repaired and expired records too")] = False,
) -> CompanyHistory:
    if include_hidden and not who.can(Permission.READ_HIDDEN):
        raise ApiError(403, "forbidden", "only an auditor may see repaired or expired records")
    company = _company(session, key)
    filters = HistoryFilter(agency=agency.upper() if agency else None, severity=severity, since=since,
                            until=until, include_hidden=include_hidden)  # fmt: skip
    # the periods the verdict judges by (verdict_rules.toml), so the two never disagree
    return reviewed_history(session, company, filters, actor=who.actor, months=request.app.state.rules.publication,
                            detail={"case": case, "filters": filters.__dict__})  # fmt: skip


@router.get("/{key}/check", response_model=CheckResult, summary="Pre-approval verdict for an approval case")
@in_worker_thread
def check(session: SessionDep, runtime: RuntimeDep, request: Request, who: Reviewer, key: Text, case: CaseId,
          item: Annotated[Text | None, Query(max_length=100, description="approval item applied for")] = None,
          ) -> CheckResult:  # fmt: skip
    company = _company(session, key)
    result = run_check(session, company=company, case_id=case, actor=who.actor, rules=request.app.state.rules,
                       agencies=runtime.registry, freshness_hours=runtime.settings.freshness_hours,
                       approval_item=item, commit=True)  # fmt: skip
    return result
