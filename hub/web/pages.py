"""The reviewer's pages: search, a company (verdict, reasons, timeline, freshness, deliveries), status.

Login is a token form that sets an HttpOnly, SameSite=Strict cookie; the same roles as the
API apply (hub.api.auth). Lookups are audited exactly as API lookups are. Login and logout
refuse a form another site sent (its Origin, else its Referer, names another host): SameSite
guards the cookie, not the forms that set or clear it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from hub import audit
from hub.api.auth import Permission, Principal
from hub.api.params import Text
from hub.companies import find_companies
from hub.compliance import agency_freshness, run_check
from hub.history import HistoryFilter, company_history, company_key, find_company
from hub.status import collect_status
from hub.web.timeline import build_timeline

__all__ = ["COOKIE", "mount", "router"]

COOKIE = "hub_token"
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals["company_key"] = company_key
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
        # the query too: a link to /companies/X?case=C-9 must come back with its case
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": here}), status_code=303)
    request.state.principal = who
    if not who.can(permission):
        return _page(request, "error.html", 403, title="Not allowed",
                     message=f"A {who.role.value} cannot use the reviewer pages.")  # fmt: skip
    return who


def _session(request: Request) -> Session:
    return Session(request.app.state.runtime.engine, expire_on_commit=False)


def _local(target: str) -> str:
    """``target`` if it stays on this site, else "/": never an open redirect after login."""
    # "//host" and "/\\host" are other hosts to a browser; a control character can hide either
    local = target.startswith("/") and target[1:2] not in ("/", "\\") and target.isprintable()
    return target if local else "/"


def _cross_site(request: Request) -> Response | None:
    """A 403 page if another site sent this form, judged by Origin, else Referer.

    A request with neither (curl, scripts) passes: a browser always sends one of them with a
    cross-site form post, and SameSite=Strict keeps the cookie out of any other request.
    """
    sender = request.headers.get("origin") or request.headers.get("referer")
    if sender is None:
        return None
    # This hub as the browser may name it: the Host it was asked for, or the one a reverse proxy in
    # front of it was asked for (X-Forwarded-Host; a browser's cross-site form cannot set that header),
    # with a scheme's default port written or not (nginx's "Host $host:$server_port").
    sent = urlsplit(sender)
    scheme = sent.scheme or request.url.scheme  # behind a TLS proxy the hub itself may be spoken to in http
    here = {_authority(name, scheme) for name in (request.headers.get("host"),
                                                  *request.headers.get("x-forwarded-host", "").split(","))
            if name and name.strip()}  # fmt: skip
    if sent.netloc and _authority(sent.netloc, scheme) in here:
        return None
    return _page(request, "error.html", 403, title="Refused: sent from another site",
                 message=f"This form was sent from {sender}, not from this hub: sign in and out on this hub's "
                         "own pages.")  # fmt: skip


def _authority(netloc: str, scheme: str) -> str:
    host, _, port = netloc.strip().lower().rpartition(":") if not netloc.strip().endswith("]") else (netloc, "", "")
    if not host or not port.isdigit():  # no port given (or an IPv6 address without one)
        return netloc.strip().lower()
    return host if port == {"https": "443", "http": "80"}.get(scheme) else f"{host}:{port}"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:  # noqa: A002 - the query name
    return _page(request, "login.html", next=_local(next), error=None)


@router.post("/login")
def login(request: Request, token: Annotated[str, Form(max_length=200)], next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
    if (refused := _cross_site(request)) is not None:
        return refused
    if request.app.state.tokens.principal(token.strip()) is None:
        return _page(request, "login.html", 401, next=_local(next), error="That token is not known to this hub.")
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", max_age=8 * 3600)  # fmt: skip
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    if (refused := _cross_site(request)) is not None:
        return refused
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def search(request: Request, q: Annotated[Text, Query(max_length=200)] = "",
           case: Annotated[Text, Query(max_length=200)] = "") -> Response:  # fmt: skip
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
def company(request: Request, key: Text, case: Annotated[Text, Query(max_length=200)] = "",
            item: Annotated[Text, Query(max_length=100)] = "",
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
    # the toggle keeps case and item: without the item the verdict (and the stored check) would change
    toggle = urlencode({k: v for k, v in (("case", case), ("item", item)) if v}
                       | {"include_hidden": "false" if include_hidden else "true"})  # fmt: skip
    return _page(request, "company.html", h=history, check=check, freshness=freshness, case=case, item=item,
                 timeline=build_timeline(history), can_see_hidden=who.can(Permission.READ_HIDDEN),
                 include_hidden=include_hidden, key=key, toggle_href="?" + toggle)  # fmt: skip


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
    """Serve the pages; a page's invalid parameters are answered as a page, the API's still as JSON."""
    app.include_router(router)
    api_invalid = app.exception_handlers[RequestValidationError]

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.scope.get("route") not in router.routes:
            return await api_invalid(request, exc)
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        return _page(request, "error.html", 422, title="Not a valid request",
                     message=f"This page cannot be shown: {problems}.")  # fmt: skip

    app.add_exception_handler(RequestValidationError, invalid)
