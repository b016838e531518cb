"""ASGI middleware: a request body size limit, and each request's latency (for /metrics) and log line.

Both are plain ASGI (not BaseHTTPMiddleware) so they see every request, streaming included.
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import quote

from prometheus_client import Histogram

__all__ = ["ACCESS_LOGGER", "BodySizeLimit", "RequestLog"]

#: One INFO line per request; `hub serve` leaves them out from HUB_LOG_LEVEL=WARNING up.
ACCESS_LOGGER = logging.getLogger("hub.api.access")
_SAFE_IN_LOG = "!#$%&'()*+,/:;=?@[]~"  # printable ASCII a URL carries as is


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            (b"connection", b"close")]})  # fmt: skip
    await send({"type": "http.response.body", "body": data})


class BodySizeLimit:
    """Refuse a request body over ``max_bytes`` with 413 before the application sees any of it.

    A declared Content-Length over the limit is refused at once; otherwise the body is read
    (never more than the limit plus one chunk) and replayed to the application.
    """

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self) -> dict:
        return {"error": {"code": "body_too_large",
                          "message": f"the request body is over the {self.max_bytes} byte limit; nothing was written"}}  # fmt: skip

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, self._too_large())
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await _send_json(send, 413, self._too_large())
            chunks.append(body)
            if not message.get("more_body"):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return await self.app(scope, replayed, send)


class RequestLog:
    """Observe each request's latency by route template (bounded label values), then log it in one line.

    The line is logged once the response has gone out (uvicorn's own access log is written
    before the response's first byte), and names the caller as the audit log does, never by
    token. `hub serve` writes it from a thread of its own (hub.logqueue).
    """

    def __init__(self, app, *, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.histogram.labels(scope["method"], template, str(status[0])).observe(seconds)
            if ACCESS_LOGGER.isEnabledFor(logging.INFO):
                self._log(scope, status[0], seconds)

    def _log(self, scope, status: int, seconds: float) -> None:
        client = scope.get("client")
        principal = (scope.get("state") or {}).get("principal")
        query = scope.get("query_string") or b""
        # percent-encoded again, as sent: a decoded newline in a path must not start a forged line
        target = quote(scope["path"] + ("?" + query.decode("latin-1") if query else ""), safe=_SAFE_IN_LOG)
        ACCESS_LOGGER.info('%s "%s %s HTTP/%s" %d %.1f ms %s', f"{client[0]}:{client[1]}" if client else "-",
                           scope["method"], target, scope.get("http_version", "1.1"), status, seconds * 1000,
                           principal.actor if principal is not None else "-")  # fmt: skip
