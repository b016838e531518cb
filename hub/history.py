"""A company's compliance history: its licences (with delivery status) and violations from every agency."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pydantic import BaseModel
from sqlmodel import Session, select

from hub.models import Company, Delivery, Licence, Violation

__all__ = ["CompanyHistory", "DeliveryView", "LicenceView", "ViolationView", "company_history", "find_company"]


class DeliveryView(BaseModel):
    agency: str
    state: str
    attempts: int
    ack_id: str | None = None
    acked_at: dt.datetime | None = None
    last_error: str | None = None


class LicenceView(BaseModel):
    decision_no: str
    licence_no: str | None
    approval_item: str
    category: str
    lifecycle: str
    decision_date: dt.date
    valid_from: dt.date
    valid_to: dt.date
    content: str | None
    deliveries: list[DeliveryView]


class ViolationView(BaseModel):
    agency: str
    agency_record_id: str
    decision_no: str
    decision_date: dt.date
    violation_type: str | None
    severity: str
    penalty_types: list[str]
    fine_wanyuan: Decimal | None
    publication_end: dt.date | None
    repair_status: str
    repair_date: dt.date | None
    identity_status: str


class CompanyHistory(BaseModel):
    uscc: str | None
    name: str
    category: str
    org_code: str | None
    reg_no: str | None
    licences: list[LicenceView]
    violations: list[ViolationView]


def find_company(session: Session, key: str) -> Company | None:
    """A company by USCC, organisation code or registration number (exact)."""
    key = key.strip()
    for column, value in ((Company.uscc, key.upper()), (Company.org_code, key.upper()), (Company.reg_no, key)):
        rows = session.exec(select(Company).where(column == value).limit(2)).all()
        if len(rows) == 1:
            return rows[0]
    return None


def company_history(session: Session, company: Company) -> CompanyHistory:
    licences = session.exec(
        select(Licence).where(Licence.company_id == company.id).order_by(Licence.decision_date, Licence.id)
    ).all()
    deliveries: dict[int, list[DeliveryView]] = {}
    if licences:
        rows = session.exec(
            select(Delivery)
            .where(Delivery.licence_id.in_([lic.id for lic in licences]), Delivery.state != "superseded")
            .order_by(Delivery.agency_code, Delivery.id)
        ).all()
        for d in rows:
            deliveries.setdefault(d.licence_id, []).append(
                DeliveryView(agency=d.agency_code, state=d.state, attempts=d.attempts, ack_id=d.ack_id,
                             acked_at=d.acked_at, last_error=d.last_error)  # fmt: skip
            )
    violations = session.exec(
        select(Violation).where(Violation.company_id == company.id).order_by(Violation.decision_date, Violation.id)
    ).all()
    return CompanyHistory(
        uscc=company.uscc,
        name=company.name,
        category=company.category,
        org_code=company.org_code,
        reg_no=company.reg_no,
        licences=[
            LicenceView(decision_no=lic.decision_no, licence_no=lic.licence_no, approval_item=lic.approval_item,
                        category=lic.category, lifecycle=lic.lifecycle, decision_date=lic.decision_date,
                        valid_from=lic.valid_from, valid_to=lic.valid_to, content=lic.payload.get("XK_NR"),
                        deliveries=deliveries.get(lic.id, []))  # fmt: skip
            for lic in licences
        ],
        violations=[
            ViolationView(agency=v.source_agency, agency_record_id=v.agency_record_id, decision_no=v.decision_no,
                          decision_date=v.decision_date, violation_type=v.payload.get("CF_WFXW"),
                          severity=v.severity, penalty_types=list(v.penalty_types), fine_wanyuan=v.fine,
                          publication_end=v.publication_end, repair_status=v.repair_status,
                          repair_date=v.repair_date, identity_status=v.identity_status)  # fmt: skip
            for v in violations
        ],
    )
