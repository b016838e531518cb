"""A company's compliance history: its licences (with delivery status) and violations from every agency.

By default only what may be shown to a reviewer is returned: a repaired penalty or one past
its publication period (hub.publication) is left out and counted in ``hidden``. An auditor may
ask for everything (``include_hidden``); each hidden record then says why it is hidden.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session

from hub import audit
from hub.models import Company, Delivery, Licence, LicenceRevision, Violation
from hub.pipelined import reading_connection, select_together
from hub.publication import ORDER_36_MONTHS, Standing, publication_end, standing, today_in_china

__all__ = [
    "CompanyHistory",
    "DeliveryView",
    "HistoryFilter",
    "LicenceView",
    "ViolationView",
    "company_history",
    "company_key",
    "find_company",
    "history_from_rows",
    "history_reads",
    "reviewed_history",
]


class DeliveryView(BaseModel):
    agency: str
    state: str
    attempts: int
    version: int | None = None  # the licence revision this delivery carried
    ack_id: str | None = None
    acked_at: dt.datetime | None = None
    last_error: str | None = None


class LicenceView(BaseModel):
    decision_no: str
    licence_no: str | None
    approval_item: str
    category: str
    lifecycle: str
    lifecycle_date: dt.date | None = None
    decision_date: dt.date
    valid_from: dt.date
    valid_to: dt.date
    content: str | None
    deliveries: list[DeliveryView]


class ViolationView(BaseModel):
    id: int
    agency: str
    agency_record_id: str
    decision_no: str
    decision_date: dt.date
    violation_type: str | None
    severity: str
    penalty_types: list[str]
    fine_wanyuan: Decimal | None
    publication_end: dt.date | None  # as the agency stated it (CF_GSJZQ)
    published_until: dt.date  # the end actually applied: CF_GSJZQ or the Order 36 maximum
    repair_status: str
    repair_date: dt.date | None
    identity_status: str
    standing: Standing  # counts, repaired or expired (the last two only appear to auditors)


class CompanyHistory(BaseModel):
    uscc: str | None
    name: str
    category: str
    org_code: str | None
    reg_no: str | None
    as_of: dt.date
    licences: list[LicenceView]
    violations: list[ViolationView]
    hidden: int = 0  # repaired or expired records left out of ``violations``


@dataclass(frozen=True)
class HistoryFilter:
    """What a reviewer narrowed the history to; None means no restriction."""

    agency: str | None = None
    severity: str | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    include_hidden: bool = False  # auditors only: repaired and expired penalties too


def company_key(company: Any) -> str:
    """The identifier that always finds ``company`` again with find_company: its USCC, else ``id:<n>``.

    A natural person may have no identifier at all, and a legacy organisation code or
    registration number may be shared by several companies, which find_company then refuses.
    """
    return company.uscc or f"{_ID_PREFIX}{company.id}"


def find_company(session: Session, key: str) -> sa.Row | None:
    """A company by USCC, organisation code or registration number (exact, and only if unambiguous),
    or by the hub's own ``id:<n>`` (company_key).

    Returns a row of the companies table (``.id``, ``.uscc``, ``.name`` … as on Company): read
    straight from the connection, because building an ORM entity was a quarter of a reviewer's
    lookup. Nothing here changes a company, so nothing needs the entity.
    """
    key = key.strip()
    conn = reading_connection(session)
    internal = key.removeprefix(_ID_PREFIX)
    if internal != key:  # an id is never a USCC or legacy id: no fallback to them
        if not (internal.isascii() and internal.isdigit()) or int(internal) >= 2**63:
            return None
        return conn.execute(_BY_ID, {"v": int(internal)}).first()
    for query, value in zip(_FIND, (key.upper(), key.upper(), key), strict=True):
        rows = conn.execute(query, {"v": value}).all()
        if len(rows) == 1:
            return rows[0]
    return None


_C = Company.__table__
_ID_PREFIX = "id:"
_BY_ID = sa.select(*_C.c).where(_C.c.id == sa.bindparam("v"))
_FIND = tuple(sa.select(*_C.c).where(column == sa.bindparam("v")).limit(2)
              for column in (_C.c.uscc, _C.c.org_code, _C.c.reg_no))  # built once, not per lookup  # fmt: skip


def _in_period(day: dt.date, f: HistoryFilter) -> bool:
    return (f.since is None or day >= f.since) and (f.until is None or day <= f.until)


# Core statements over the tables, built once: reviewer lookups read rows, not ORM entities
# (identity map and instrumentation were most of a history's time; see docs/benchmarks.md)
_D, _R, _L, _V = Delivery.__table__, LicenceRevision.__table__, Licence.__table__, Violation.__table__
# only what the views show: two items of a payload are extracted in SQL rather than decoding it all
_LICENCE_COLUMNS = (
    _L.c.id, _L.c.decision_no, _L.c.licence_no, _L.c.approval_item, _L.c.category, _L.c.lifecycle,
    _L.c.decision_date, _L.c.valid_from, _L.c.valid_to,
    _L.c.payload["lifecycle_date"].as_string().label("lifecycle_date"), _L.c.payload["XK_NR"].as_string().label("content"),
)  # fmt: skip
_VIOLATION_COLUMNS = (
    _V.c.id, _V.c.source_agency, _V.c.agency_record_id, _V.c.decision_no, _V.c.decision_date, _V.c.severity,
    _V.c.penalty_types, _V.c.fine, _V.c.publication_end, _V.c.repair_status, _V.c.repair_date, _V.c.identity_status,
    _V.c.payload["CF_WFXW"].as_string().label("violation_type"),
)  # fmt: skip
_DELIVERY_COLUMNS = (_D.c.id, _D.c.agency_code, _D.c.state, _D.c.attempts, _D.c.ack_id, _D.c.acked_at, _D.c.last_error)


def _licences_query(agency: str | None) -> sa.Select:
    """A company's licences, each joined to its live deliveries (one row per delivery; none: one row)."""
    on = sa.and_(_D.c.licence_id == _L.c.id, _D.c.state != "superseded")
    if agency:
        on = sa.and_(on, _D.c.agency_code == agency)
    return (
        sa.select(*_LICENCE_COLUMNS, *(c.label(f"d_{c.name}") for c in _DELIVERY_COLUMNS),
                  _R.c.version.label("d_version"))  # fmt: skip
        .select_from(_L.outerjoin(_D, on).outerjoin(_R, _R.c.id == _D.c.revision_id))
        .where(_L.c.company_id == sa.bindparam("cid"))
        .order_by(_L.c.decision_date, _L.c.id, _D.c.agency_code, _D.c.id)
    )


_LICENCES = _licences_query(None)  # one query for licences and deliveries: a round trip fewer per lookup
_VIOLATIONS = sa.select(*_VIOLATION_COLUMNS).where(_V.c.company_id == sa.bindparam("cid"))
# ordered once here: an order_by() per call made a new statement whose cache key SQLAlchemy then
# computed anew on every lookup (a tenth of a history's time in the profile)
_VIOLATIONS_ORDERED = _VIOLATIONS.order_by(_V.c.decision_date, _V.c.id)


def _licences(rows: list, f: HistoryFilter) -> list[tuple[sa.Row, list[DeliveryView]]]:
    out: dict[int, tuple[sa.Row, list[DeliveryView]]] = {}
    for row in rows:
        if not _in_period(row.decision_date, f):
            continue
        _, deliveries = out.setdefault(row.id, (row, []))
        if row.d_id is not None:
            deliveries.append(DeliveryView(agency=row.d_agency_code, state=row.d_state, attempts=row.d_attempts,
                                           version=row.d_version, ack_id=row.d_ack_id, acked_at=row.d_acked_at,
                                           last_error=row.d_last_error))  # fmt: skip
    if f.agency:  # a licence belongs to an agency's view only if it was routed there
        return [(lic, ds) for lic, ds in out.values() if ds]
    return list(out.values())


def _violation_view(v: sa.Row, today: dt.date, months: Mapping[str, int]) -> ViolationView:
    return ViolationView(
        id=v.id, agency=v.source_agency, agency_record_id=v.agency_record_id, decision_no=v.decision_no,
        decision_date=v.decision_date, violation_type=v.violation_type, severity=v.severity,
        penalty_types=list(v.penalty_types), fine_wanyuan=v.fine, publication_end=v.publication_end,
        published_until=publication_end(v.severity, v.decision_date, v.publication_end, months),
        repair_status=v.repair_status, repair_date=v.repair_date, identity_status=v.identity_status,
        standing=standing(severity=v.severity, decision_date=v.decision_date, stated_end=v.publication_end,
                          repair_status=v.repair_status, repair_date=v.repair_date, today=today, months=months),
    )  # fmt: skip


def history_reads(company: Company | sa.Row, filters: HistoryFilter | None = None) -> list[tuple[sa.Select, dict]]:
    """The two reads of a history (licences with their deliveries, then violations), for
    hub.pipelined.select_together: a caller with reads of its own sends them in the same round trip."""
    f = filters or HistoryFilter()
    query = _VIOLATIONS_ORDERED
    if f.agency or f.severity:  # a reviewer's narrowed view: rarer, built per call
        query = _VIOLATIONS
        if f.agency:
            query = query.where(_V.c.source_agency == f.agency)
        if f.severity:
            query = query.where(_V.c.severity == f.severity)
        query = query.order_by(_V.c.decision_date, _V.c.id)
    return [(_licences_query(f.agency) if f.agency else _LICENCES, {"cid": company.id}), (query, {"cid": company.id})]


def company_history(session: Session, company: Company | sa.Row, filters: HistoryFilter | None = None, *,
                    today: dt.date | None = None,
                    months: Mapping[str, int] = ORDER_36_MONTHS) -> CompanyHistory:  # fmt: skip
    """One company's licences and violations, filtered, as a reviewer (or auditor) may see them.

    Args:
        session: an open session.
        company: the company (see find_company / hub.companies.find_companies).
        filters: agency, severity, period, and whether to include hidden records.
        today: the date publication windows are judged on (default: today in China).
        months: Order 36 maximum publication periods per severity class.
    """
    # both reads in one round trip where the driver allows (hub.pipelined)
    licence_rows, violation_rows = select_together(reading_connection(session), history_reads(company, filters))
    return history_from_rows(company, filters, licence_rows, violation_rows, today=today, months=months)


def reviewed_history(session: Session, company: Company | sa.Row, filters: HistoryFilter | None, *, actor: str,
                     detail: Mapping[str, Any], months: Mapping[str, int] = ORDER_36_MONTHS) -> CompanyHistory:  # fmt: skip
    """company_history for a reviewer: the lookup is appended to the audit log and committed with it.

    On PostgreSQL the audit log's lock and last hash are read in the history's round trip
    (hub.audit.select_with_head), and the entry goes with the COMMIT: once the company is found,
    two round trips, where reading the history and then appending took three. The result is
    built after the COMMIT, so the writers' lock is held only while the entry is written.
    """
    reads = history_reads(company, filters)
    (licence_rows, violation_rows), head = audit.select_with_head(reading_connection(session), reads)
    audit.append(session, actor=actor, action="review.history", subject=f"company:{company.uscc or company.id}",
                 detail=dict(detail), commit=True, head=head)  # fmt: skip
    return history_from_rows(company, filters, licence_rows, violation_rows, months=months)


def history_from_rows(company: Company | sa.Row, filters: HistoryFilter | None, licence_rows: list,
                      violation_rows: list, *, today: dt.date | None = None,
                      months: Mapping[str, int] = ORDER_36_MONTHS) -> CompanyHistory:  # fmt: skip
    """The history that ``history_reads(company, filters)`` returned ``licence_rows`` and ``violation_rows`` for."""
    f = filters or HistoryFilter()
    today = today or today_in_china()
    licences = _licences(licence_rows, f)
    views = [_violation_view(v, today, months) for v in violation_rows if _in_period(v.decision_date, f)]
    shown = views if f.include_hidden else [v for v in views if v.standing == Standing.COUNTS]
    return CompanyHistory(
        uscc=company.uscc, name=company.name, category=company.category, org_code=company.org_code,
        reg_no=company.reg_no, as_of=today,
        licences=[
            LicenceView(decision_no=lic.decision_no, licence_no=lic.licence_no, approval_item=lic.approval_item,
                        category=lic.category, lifecycle=lic.lifecycle,
                        lifecycle_date=lic.lifecycle_date, decision_date=lic.decision_date,
                        valid_from=lic.valid_from, valid_to=lic.valid_to, content=lic.content,
                        deliveries=deliveries)
            for lic, deliveries in licences
        ],
        violations=shown,
        hidden=len(views) - len(shown),
    )  # fmt: skip
