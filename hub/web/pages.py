"""The reviewer's pages: search, a company (verdict, reasons, timeline, freshness, deliveries), status.

Login is a token form that sets an HttpOnly, SameSite=Strict cookie; the same roles as the
API apply (hub.api.auth). Lookups are audited exactly as API lookups are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from hub import audit
from hub.api.auth import Permission, Principal
from hub.companies import find_companies
from hub.compliance import agency_freshness, run_check
from hub.history import HistoryFilter, company_history, find_company
from hub.status import collect_status
from hub.web.timeline import build_timeline

__all__ = ["COOKIE", "mount", "router"]

COOKIE = "hub_token"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)


def _principal(request: Request) -> Principal | None:
    token = request.cookies.get(COOKIE)
    return request.app.state.tokens.principal(token) if token else None


def _page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    context.setdefault("who", getattr(request.state, "principal", None))
    return templates.TemplateResponse(request, name, context, status_code=status)


def _guard(request: Request, permission: Permission) -> Principal | Response:
    who = _principal(request)
    if who is None:
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    request.state.principal = who
    if not who.can(permission):
        return _page(request, "error.html", 403, title="Not allowed",
                     message=f"A {who.role.value} cannot use the reviewer pages.")  # fmt: skip
    return who


def _session(request: Request) -> Session:
    return Session(request.app.state.runtime.engine, expire_on_commit=False)


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the query name
    return _page(request, "login.html", next=next if next.startswith("/") else "/", error=None)


@router.post("/login")
def login(request: Request, token: Annotated[str, Form(max_length=200)], next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
    if request.app.state.tokens.principal(token.strip()) is None:
        return _page(request, "login.html", 401, next=next, error="That token is not known to this hub.")
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=8 * 3600)  # fmt: skip
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def search(request: Request, q: Annotated[str, Query(max_length=200)] = "",
           case: Annotated[str, Query(max_length=200)] = "") -> Response:  # fmt: skip
    who = _guard(request, Permission.READ_COMPANIES)
    if isinstance(who, Response):
        return who
    hits = []
    if q.strip():
        with _session(request) as session:
            hits = find_companies(session, q)
            audit.append(session, actor=who.actor, action="review.search", subject=f"query:{q[:200]}",
                         detail={"hits": [c.uscc or c.id for c in hits], "case": case or None}, commit=True)  # fmt: skip
    return _page(request, "search.html", q=q, case=case, hits=hits)


@router.get("/companies/{key}", response_class=HTMLResponse)
def company(request: Request, key: str, case: Annotated[str, Query(max_length=200)] = "",
            item: Annotated[str, Query(max_length=100)] = "",
            include_hidden: bool = False) -> Response:  # fmt: skip
    who = _guard(request, Permission.READ_COMPANIES)
    if isinstance(who, Response):
        return who
    include_hidden = include_hidden and who.can(Permission.READ_HIDDEN)
    runtime = request.app.state.runtime
    with _session(request) as session:
        found = find_company(session, key)
        if found is None:
            return _page(request, "error.html", 404, title="No such company",
                         message=f"No single company has the identifier {key}.")  # fmt: skip
        history = company_history(session, found, HistoryFilter(include_hidden=include_hidden),
                                  months=request.app.state.rules.publication)  # fmt: skip
        check = None
        if case.strip():
            check = run_check(session, company=found, case_id=case, actor=who.actor, rules=request.app.state.rules,
                              agencies=runtime.registry, freshness_hours=runtime.settings.freshness_hours,
                              approval_item=item or None)  # fmt: skip
            freshness = check.freshness
        else:
            freshness = agency_freshness(session, runtime.registry, bound_hours=runtime.settings.freshness_hours,
                                         kinds=request.app.state.rules.freshness.kinds)  # fmt: skip
        audit.append(session, actor=who.actor, action="review.history", subject=f"company:{found.uscc or found.id}",
                     detail={"case": case or None, "include_hidden": include_hidden, "via": "web"}, commit=True)  # fmt: skip
    return _page(request, "company.html", h=history, check=check, freshness=freshness, case=case, item=item,
                 timeline=build_timeline(history), can_see_hidden=who.can(Permission.READ_HIDDEN),
                 include_hidden=include_hidden, key=key)  # fmt: skip


@router.get("/status", response_class=HTMLResponse)
def status(request: Request) -> Response:
    who = _guard(request, Permission.READ_STATUS)
    if isinstance(who, Response):
        return who
    runtime = request.app.state.runtime
    with _session(request) as session:
        result = collect_status(session, runtime.registry.values(), pki_dir=runtime.settings.resolved_pki_dir,
                                freshness_hours=runtime.settings.freshness_hours)  # fmt: skip
    return _page(request, "status.html", hub_status=result, bound=runtime.settings.freshness_hours)


def mount(app: FastAPI) -> None:
    app.include_router(router)
