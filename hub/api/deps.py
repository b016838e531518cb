"""Request dependencies: the runtime, a database session, and the authenticated caller.

They are ``async def`` because none of them waits on anything but the database's ROLLBACK,
which goes to a worker thread: FastAPI runs a plain ``def`` dependency in its thread pool,
and each such hop cost ~0.1 ms at the median on the benchmark machine (and a scheduler
wait at the tail when the cores are busy). A reviewer request made six hops; now one, the
endpoint itself (docs/benchmarks.md, scenario 4 over HTTP), made explicit by ``in_worker_thread``.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Request
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from hub.api.auth import Permission, Principal, Role, TokenStore
from hub.api.errors import ApiError
from hub.runtime import HubRuntime

__all__ = [
    "CLIENT_CERT_EXTENSION",
    "CurrentPrincipal",
    "JsonBody",
    "RuntimeDep",
    "SessionDep",
    "authenticate",
    "in_worker_thread",
    "require",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Where hub.api.tls puts the verified client certificate's subject CN in the ASGI scope.
CLIENT_CERT_EXTENSION = "hub.client_cert"


async def get_runtime(request: Request) -> HubRuntime:
    return request.app.state.runtime


RuntimeDep = Annotated[HubRuntime, Depends(get_runtime)]


def _end(session: Session) -> None:
    session.rollback()
    session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request; endpoints that write commit explicitly, anything else rolls back.

    Opening a session does no I/O. Ending one that still has a transaction (nothing was
    committed, or the endpoint failed) sends a ROLLBACK: that happens in a worker thread,
    never on the event loop.
    """
    session = Session(request.app.state.runtime.engine, expire_on_commit=False)
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(_end, session)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def authenticate(request: Request, *, bearer: str | None) -> Principal | None:
    """The caller named by a bearer token or a verified client certificate, or None."""
    tokens: TokenStore = request.app.state.tokens
    if bearer is not None:
        principal = tokens.principal(bearer)
        if principal is None:
            raise ApiError(401, "invalid_token", "the bearer token is not known to this hub")
        return principal
    cn = (request.scope.get("extensions") or {}).get(CLIENT_CERT_EXTENSION, {}).get("cn")
    if cn:
        registry = request.app.state.runtime.registry
        if cn not in registry:
            raise ApiError(403, "unknown_certificate", f"the client certificate names {cn!r}, which is no agency here")
        return Principal(name=cn, role=Role.REGULATOR, agency=cn, via="certificate")
    return None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthenticated", "use 'Authorization: Bearer <token>'")
    return value.strip()


async def current_principal(request: Request) -> Principal:
    principal = authenticate(request, bearer=_bearer(request))
    if principal is None:
        raise ApiError(401, "unauthenticated", "this endpoint needs a bearer token or a client certificate")
    if principal.agency is not None and principal.agency not in request.app.state.runtime.registry:
        # a token for an agency removed (or mistyped) since it was issued acts for no one
        raise ApiError(403, "unknown_agency", f"this token's agency {principal.agency} is not configured on this hub")
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require(permission: Permission):
    """A dependency admitting only callers whose role grants ``permission`` (deny by default)."""

    async def check(request: Request) -> Principal:
        principal = await current_principal(request)
        if not principal.can(permission):
            raise ApiError(403, "forbidden", f"a {principal.role.value} may not do this ({permission.value})")
        return principal

    return Depends(check)


def _json_body(request: Request) -> None:
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json")):
        return
    # without this, FastAPI hands the body over unparsed and answers a puzzling 422 about dicts
    sent = f"Content-Type {media_type}" if media_type else "no Content-Type"
    raise ApiError(415, "unsupported_media_type", f"send the body as application/json (this request has {sent})")


#: For endpoints with a JSON body; after the caller's dependency, so an unknown caller learns nothing more.
JsonBody = Annotated[None, Depends(_json_body)]


def in_worker_thread(endpoint: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Make a blocking endpoint ``async``: its body runs in one thread-pool hop, its response on the loop.

    FastAPI runs a plain ``def`` endpoint in its thread pool, and then validates the value it
    returned against the response model in a second hop (``fastapi.routing.serialize_response``
    with ``is_coroutine=False``), only to accept the model instance it was given. On a busy
    2-core machine a hop cost ~1 ms at the median (a bare FastAPI /healthz over loopback: 2.4 ms
    as ``def``, 1.1 ms as ``async def``). Wrapped, the database work still never
    runs on the event loop, and the response is validated and encoded there (pydantic-core,
    straight to JSON bytes). The signature FastAPI reads is the endpoint's (``functools.wraps``).
    """

    @functools.wraps(endpoint)
    async def hop(*args: P.args, **kwargs: P.kwargs) -> R:
        return await run_in_threadpool(endpoint, *args, **kwargs)

    return hop
