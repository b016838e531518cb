"""One company stays one company: when its USCC first arrives, a company known until then only by
its registration number or organisation code takes it, on every path a USCC arrives by (a new
licence, a changed licence, a pulled penalty). Two candidates adopt nothing: never a guess."""

from __future__ import annotations

from sqlmodel import Session, select

from contracts.records import LicenceGrant
from contracts.registry import load_registry
from contracts.uscc import PLACEHOLDER
from hub.db import session_scope
from hub.history import find_company
from hub.licences import record_grants
from hub.models import Company, IdentityStatus, Violation
from hub.violations import store_violation
from tests.helpers import grant, make_uscc
from tests.test_storage import violation

REG_NO = "120104000012345"
USCC = make_uscc(7)


def _record(engine, *grants: dict) -> None:
    with session_scope(engine) as session:
        record_grants(session, [LicenceGrant.model_validate(g) for g in grants], load_registry(), actor="test")


def _legacy_grant(n: int, *, org_code: str | None = None) -> dict:
    """A licence to a company named by its registration number (with the placeholder code), else by its organisation code."""
    if org_code is None:
        return grant(n, XK_XDR_SHXYM=PLACEHOLDER, XK_XDR_GSZC=REG_NO, XK_XDR_LB="个体工商户")  # the placeholder is theirs
    return {k: v for k, v in grant(n, XK_XDR_ZZJG=org_code).items() if k != "XK_XDR_SHXYM"}


def _companies(engine) -> list[tuple[str | None, str | None, str | None]]:
    with Session(engine) as session:
        return [(c.uscc, c.reg_no, c.org_code) for c in session.exec(select(Company).order_by(Company.id))]


def test_a_new_licence_with_the_uscc_adopts_the_company_known_by_its_registration_number(engine):
    _record(engine, _legacy_grant(1))
    with session_scope(engine) as session:  # a penalty the market bureau filed under the old number
        _, stored = store_violation(session, violation("OLD-1", CF_XDR_SHXYM=None, CF_XDR_GSZC=REG_NO))
    assert stored.identity_status == IdentityStatus.LINKED

    _record(engine, grant(2, XK_XDR_SHXYM=USCC, XK_XDR_GSZC=REG_NO))

    assert _companies(engine) == [(USCC, REG_NO, USCC[8:17])]
    with Session(engine) as session:
        company = find_company(session, USCC)
        assert session.exec(select(Violation.company_id)).one() == company.id  # the old penalty counts for it


def test_a_changed_licence_now_carrying_the_uscc_adopts_its_company(engine):
    _record(engine, _legacy_grant(1))
    _record(engine, grant(1, XK_XDR_SHXYM=USCC, XK_XDR_GSZC=REG_NO, XK_NR="热食类食品制售（换证）"))
    assert _companies(engine) == [(USCC, REG_NO, USCC[8:17])]


def test_a_penalty_with_the_uscc_adopts_the_company_known_by_the_organisation_code_it_embeds(engine):
    _record(engine, _legacy_grant(1, org_code=USCC[8:17]))
    with session_scope(engine) as session:
        _, stored = store_violation(session, violation("NEW-1", CF_XDR_SHXYM=USCC))
    assert _companies(engine) == [(USCC, None, USCC[8:17])]
    assert stored.identity_status == IdentityStatus.LINKED and stored.company_id is not None


def test_two_companies_the_uscc_could_be_adopt_nothing(engine):
    _record(engine, _legacy_grant(1, org_code=USCC[8:17]), _legacy_grant(2))
    _record(engine, grant(3, XK_XDR_SHXYM=USCC, XK_XDR_GSZC=REG_NO))
    assert sorted(_companies(engine), key=str) == sorted(
        [(None, None, USCC[8:17]), (None, REG_NO, None), (USCC, REG_NO, USCC[8:17])], key=str)  # fmt: skip


def test_a_penalty_whose_organisation_code_is_unknown_is_linked_by_its_registration_number(engine):
    _record(engine, _legacy_grant(1))
    with session_scope(engine) as session:
        _, stored = store_violation(session, violation("OLD-2", CF_XDR_SHXYM=None, CF_XDR_GSZC=REG_NO,
                                                       CF_XDR_ZZJG=make_uscc(99)[8:17]))  # fmt: skip
    assert stored.identity_status == IdentityStatus.LINKED and "registration number" in stored.identity_note


def test_a_legacy_licence_after_the_uscc_one_joins_the_same_company_in_any_order_and_batching(engine):
    """One import holding both: the new licence with the USCC is bulk-inserted before the legacy one."""
    _record(engine, grant(2, XK_XDR_SHXYM=USCC, XK_XDR_GSZC=REG_NO), _legacy_grant(1))
    _record(engine, _legacy_grant(3, org_code=USCC[8:17]))
    assert _companies(engine) == [(USCC, REG_NO, USCC[8:17])]


def test_a_registration_number_with_another_organisation_code_is_another_company(engine):
    _record(engine, grant(2, XK_XDR_SHXYM=USCC, XK_XDR_GSZC=REG_NO))
    other_org = make_uscc(99)[8:17]
    _record(engine, grant(3, XK_XDR_SHXYM=PLACEHOLDER, XK_XDR_GSZC=REG_NO, XK_XDR_ZZJG=other_org, XK_XDR_LB="个体工商户"))
    assert sorted(_companies(engine), key=str) == sorted([(USCC, REG_NO, USCC[8:17]), (None, REG_NO, other_org)],
                                                         key=str)  # fmt: skip
