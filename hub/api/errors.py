"""Errors as JSON with a stable code and a message a person understands.

Every error body has the same shape, whatever raised it::

    {"error": {"code": "contract_violation", "message": "…", "problems": [...]}}

Clients branch on ``code`` (stable), people read ``message``.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.errors import ConfigurationError, ContractViolation, HubError, RefusedInput, TransientError

__all__ = ["ApiError", "error_body", "install_error_handlers"]

_STATUS_CODES = {
    400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
    413: "body_too_large", 415: "unsupported_media_type", 422: "invalid_request", 429: "too_many_requests",
}  # fmt: skip
#: Seconds a 503 asks the caller to wait when the error gives no estimate of its own.
DEFAULT_RETRY_AFTER = 5


class ApiError(Exception):
    """Raise from an endpoint to answer with a JSON error."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _json(status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def _retry_after(exc: TransientError) -> int:
    """Whole seconds, as Retry-After wants them: the error's own estimate, else a short default."""
    return max(1, math.ceil(exc.retry_after)) if exc.retry_after else DEFAULT_RETRY_AFTER


def _try_again_message(exc: TransientError) -> str:
    message = str(exc)
    if "try again" in message.lower():  # the error already says when; a second "try again" would contradict it
        return message
    return f"{message}; try again in {_retry_after(exc)} s" if exc.retry_after else f"{message}; try again shortly"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure — ours, FastAPI's and Starlette's — in the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _json(exc.status, exc.code, exc.message, headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e.get("loc", ())),
                     "reason": e.get("msg", "").removeprefix("Value error, ")}  # pydantic's prefix for our validators
                    for e in exc.errors()]  # fmt: skip
        summary = "; ".join(f"{p['field']}: {p['reason']}" for p in problems[:5])
        return _json(422, "invalid_request", f"the request is not valid: {summary}", problems=problems)

    @app.exception_handler(ContractViolation)
    async def _contract(_request: Request, exc: ContractViolation) -> JSONResponse:
        problems = [{"record": p.record, "field": p.field, "reason": p.reason} for p in exc.problems]
        return _json(422, "contract_violation",
                     f"{len(problems)} problem(s) in the submitted records; nothing was written",
                     problems=problems)  # fmt: skip

    @app.exception_handler(RefusedInput)
    async def _refused(_request: Request, exc: RefusedInput) -> JSONResponse:
        return _json(400, "refused_input", f"{exc}; nothing was written")

    @app.exception_handler(TransientError)
    async def _transient(_request: Request, exc: TransientError) -> JSONResponse:
        return _json(503, "try_again", _try_again_message(exc), {"Retry-After": str(_retry_after(exc))})

    @app.exception_handler(ConfigurationError)
    async def _config(_request: Request, exc: ConfigurationError) -> JSONResponse:
        return _json(500, "configuration_error", f"the hub is misconfigured: {exc}")

    @app.exception_handler(HubError)
    async def _hub(_request: Request, exc: HubError) -> JSONResponse:
        return _json(500, "hub_error", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404 and message == "Not Found":
            message = "there is nothing at this address"
        if exc.status_code == 400 and "parsing the body" in message:
            code, message = "invalid_json", "the request body is not valid JSON (UTF-8); nothing was written"
        return _json(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, _exc: Exception) -> JSONResponse:
        # The details go to the server log (uvicorn logs the traceback), not to the caller.
        return _json(500, "internal_error", "the hub failed to answer this request; the error was logged")
