"""Company identity: the USCC is the key; legacy ids link old agency data, never by guessing."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col, or_, select

from contracts.records import LicenceGrant, SubjectCategory, ViolationRecord
from contracts.uscc import PLACEHOLDER, org_code_of
from hub.bulk import MatchingRows
from hub.clock import utcnow
from hub.models import Company, IdentityStatus

__all__ = ["Identity", "adopt_legacy_companies", "company_ids_by_uscc", "find_companies", "resolve_identity",
           "upsert_companies", "upsert_company"]


def upsert_company(session: Session, grant: LicenceGrant) -> Company:
    """The company a licence is granted to, created or refreshed from the grant's subject fields."""
    company = None
    uscc = grant.uscc if grant.uscc and grant.uscc != PLACEHOLDER else None
    if uscc:
        company = session.exec(select(Company).where(Company.uscc == uscc)).first()
        if company is None and (adopted := adopt_legacy_companies(session, {uscc: grant.reg_no})):
            company = session.get(Company, adopted[uscc], populate_existing=True)
    elif grant.reg_no:  # the one company with that number, whether or not its USCC is known by now
        company = _by_legacy_id(session, Company.reg_no, grant.reg_no, org_code=grant.org_code)
    elif grant.org_code:
        company = _by_legacy_id(session, Company.org_code, grant.org_code, org_code=grant.org_code)
    if company is None:
        company = Company(uscc=uscc, name=grant.subject_name, category=grant.subject_category.value)
        session.add(company)
    company.name = grant.subject_name
    company.category = grant.subject_category.value
    if uscc:
        company.org_code = org_code_of(uscc)
    elif company.uscc is None:  # a known USCC fixes the organisation code: a legacy record does not change it
        company.org_code = grant.org_code or company.org_code
    company.reg_no = grant.reg_no or company.reg_no
    company.legal_rep = grant.legal_rep or company.legal_rep
    company.updated_at = utcnow()
    session.flush()
    return company


def _by_legacy_id(session: Session, column, value: str, *, org_code: str | None) -> Company | None:
    """The company a legacy id names: the only one holding it, else (several) the first still
    without a USCC, as before USCCs were adopted; never one whose organisation code contradicts."""
    found = [c for c in session.exec(select(Company).where(column == value).order_by(Company.id)).all()
             if not (org_code and c.org_code and c.org_code != org_code)]  # fmt: skip
    if len(found) == 1:
        return found[0]
    return next((c for c in found if c.uscc is None), None)


def upsert_companies(session: Session, grants: list[LicenceGrant]) -> dict[str, int]:
    """upsert_company for many grants with a USCC at once; returns {USCC: company id}.

    The companies end as calling upsert_company for each grant in turn leaves them: the last grant
    of a company names it, and a registration number or legal representative is only ever
    replaced by another, never erased (a company whose fields do not change keeps its updated_at). A company another transaction adds meanwhile is skipped on insert
    (ON CONFLICT DO NOTHING waits for it) and refreshed like any existing one.
    """
    latest: dict[str, dict] = {}
    for grant in grants:
        fields = latest.setdefault(grant.uscc, {"reg_no": None, "legal_rep": None})
        fields.update(name=grant.subject_name, category=grant.subject_category.value, org_code=org_code_of(grant.uscc),
                      reg_no=grant.reg_no or fields["reg_no"], legal_rep=grant.legal_rep or fields["legal_rep"])  # fmt: skip
    table, now = Company.__table__, utcnow()
    codes = list(latest)
    adopt_legacy_companies(session, {c: latest[c]["reg_no"] for c in codes})  # refreshed below like any other
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(dialect_insert(table).on_conflict_do_nothing(index_elements=["uscc"]),
                    [{"uscc": c, **latest[c], "created_at": now, "updated_at": now} for c in codes])  # fmt: skip
    found, updates = {}, []
    for row in _COMPANY_ROWS.all(session, codes):
        found[row.uscc] = row.id
        want = latest[row.uscc]
        want = {**want, "reg_no": want["reg_no"] or row.reg_no, "legal_rep": want["legal_rep"] or row.legal_rep}
        if any(getattr(row, name) != value for name, value in want.items()):
            updates.append({"_id": row.id, **want, "updated_at": now})
    if updates:
        session.execute(table.update().where(table.c.id == sa.bindparam("_id"))
                        .values({name: sa.bindparam(name) for name in updates[0] if name != "_id"}), updates)  # fmt: skip
    return found


def adopt_legacy_companies(session: Session, wanted: dict[str, str | None]) -> dict[str, int]:
    """Give each USCC in ``wanted`` that no company holds yet to the one company known so far only
    by a legacy id the record carries: its registration number (the value) or the organisation
    code the USCC embeds. Otherwise one company would become two, and its penalties known by the
    legacy id would be missing from the check made by USCC. Two candidates, or a candidate two
    USCCs point to, adopt nothing: never a guess. Returns ``{USCC: company id}`` of those adopted.
    """
    if session.execute(_ANY_LEGACY).first() is None:  # the usual case, and one indexed probe instead of a search
        return {}
    held = _select_company_ids(session, list(wanted))
    wanted = {uscc: reg for uscc, reg in wanted.items() if uscc not in held}
    orgs = {uscc: org_code_of(uscc) for uscc in wanted}
    found: dict[int, tuple[str | None, str | None]] = {}
    for lookup, values in ((_LEGACY_BY_ORG, orgs.values()), (_LEGACY_BY_REG, [r for r in wanted.values() if r])):
        found.update((i, (o, r)) for i, o, r in lookup.all(session, list(values)))
    # a company whose organisation code is not the one the USCC embeds is another company, whatever its number
    candidates = {uscc: {i for i, (org, reg) in found.items()
                         if org == orgs[uscc] or (reg and reg == wanted[uscc] and org in (None, orgs[uscc]))}
                  for uscc in wanted}  # fmt: skip
    claims: dict[int, int] = {}
    for ids in candidates.values():
        for company_id in ids:
            claims[company_id] = claims.get(company_id, 0) + 1
    adopted = {uscc: company_id for uscc, ids in candidates.items() if len(ids) == 1
               for company_id in ids if claims[company_id] == 1}  # fmt: skip
    table, taken = Company.__table__, {}
    for uscc, company_id in adopted.items():
        done = session.execute(table.update().where(table.c.id == company_id, table.c.uscc.is_(None))
                               .values(uscc=uscc, org_code=orgs[uscc], updated_at=utcnow()))  # fmt: skip
        if done.rowcount == 1:  # not when another transaction gave it a USCC meanwhile
            taken[uscc] = company_id
    return taken


_LEGACY_COLUMNS = (Company.__table__.c.id, Company.__table__.c.org_code, Company.__table__.c.reg_no)
_LEGACY_BY_ORG = MatchingRows(_LEGACY_COLUMNS, Company.__table__.c.org_code, Company.__table__.c.uscc.is_(None))
_LEGACY_BY_REG = MatchingRows(_LEGACY_COLUMNS, Company.__table__.c.reg_no, Company.__table__.c.uscc.is_(None))
_ANY_LEGACY = sa.select(Company.id).where(Company.uscc.is_(None)).limit(1)


@dataclass(frozen=True)
class Identity:
    company_id: int | None
    status: IdentityStatus
    note: str | None = None


def _by_legacy(session: Session, column, value: str, label: str) -> Identity:
    ids = session.exec(select(Company.id).where(column == value).limit(3)).all()
    if len(ids) == 1:
        return Identity(ids[0], IdentityStatus.LINKED, f"linked by {label} {value}")
    if ids:
        return Identity(None, IdentityStatus.AMBIGUOUS, f"{label} {value} matches several companies")
    return Identity(None, IdentityStatus.UNKNOWN, f"{label} {value} matches no known company")


_COMPANY_IDS = MatchingRows((Company.__table__.c.uscc, Company.__table__.c.id), Company.__table__.c.uscc)
_COMPANY_ROWS = MatchingRows([Company.__table__.c[name] for name in ("id", "uscc", "name", "category", "org_code", "reg_no",
                                                                     "legal_rep")], Company.__table__.c.uscc)  # fmt: skip


def _select_company_ids(session: Session, codes: list[str]) -> dict[str, int]:
    return {uscc: company_id for uscc, company_id in _COMPANY_IDS.all(session, codes)}


def company_ids_by_uscc(session: Session, records: list[ViolationRecord]) -> dict[str, int]:
    """Company ids for the records' USCCs, creating the companies that are missing.

    Two workers pulling two agencies may meet the same new company at once: the INSERT skips a
    USCC another transaction has just added (ON CONFLICT DO NOTHING waits for it to commit), and
    the ids are read back afterwards, so neither pull fails on the unique constraint.
    """
    wanted = {r.uscc: r for r in records if r.uscc and r.uscc != PLACEHOLDER}
    ids = _select_company_ids(session, list(wanted))
    if absent := {c: wanted[c].reg_no for c in wanted if c not in ids}:
        ids.update(adopt_legacy_companies(session, absent))
    missing = [wanted[c] for c in wanted if c not in ids]
    if missing:
        now, table = utcnow(), Company.__table__
        rows = [{"uscc": r.uscc, "name": r.subject_name, "category": r.subject_category.value,
                 "org_code": org_code_of(r.uscc), "reg_no": r.reg_no, "legal_rep": None,
                 "created_at": now, "updated_at": now} for r in missing]  # fmt: skip
        dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        # RETURNING makes SQLAlchemy send the rows as one multi-row INSERT, not a statement per company
        insert = dialect_insert(table).on_conflict_do_nothing(index_elements=["uscc"]).returning(table.c.uscc, table.c.id)
        ids.update((uscc, company_id) for uscc, company_id in session.execute(insert, rows))
        if skipped := [r.uscc for r in missing if r.uscc not in ids]:  # another transaction added them meanwhile
            ids.update(_select_company_ids(session, skipped))
    return ids


def resolve_identity(session: Session, record: ViolationRecord) -> Identity:
    """Attach a penalty to a company: by USCC (creating the company), else by a legacy id.

    A record carrying only an organisation code or a registration number is linked when exactly
    one company embeds or records it; otherwise it is kept, flagged ambiguous or unknown.
    """
    if record.uscc and record.uscc != PLACEHOLDER:
        return Identity(company_ids_by_uscc(session, [record])[record.uscc], IdentityStatus.LINKED)
    if record.org_code:
        by_org = _by_legacy(session, Company.org_code, record.org_code, "organisation code")
        if by_org.status != IdentityStatus.UNKNOWN or not record.reg_no:
            return by_org
    if record.reg_no:
        return _by_legacy(session, Company.reg_no, record.reg_no, "registration number")
    if record.subject_category == SubjectCategory.NATURAL_PERSON:
        return Identity(None, IdentityStatus.UNKNOWN, "natural person without an identifier")
    return Identity(None, IdentityStatus.UNKNOWN, "no identifier")


def find_companies(session: Session, query: str, *, limit: int = 20) -> list[Company]:
    """Companies by USCC, organisation code, registration number, or part of the (Chinese) name."""
    text = query.strip()
    if not text:
        return []
    upper = text.upper()
    exact = or_(Company.uscc == upper, Company.org_code == upper, Company.reg_no == text)
    found = list(session.exec(select(Company).where(exact).limit(limit)).all())
    if len(found) < limit:
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        seen = {c.id for c in found}
        more = session.exec(
            select(Company).where(col(Company.name).like(pattern, escape="\\")).order_by(Company.name).limit(limit)
        ).all()
        found += [c for c in more if c.id not in seen][: limit - len(found)]
    return found
