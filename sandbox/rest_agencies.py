"""REST front-ends over ``sandbox.core.AgencyBook``: 市场监管局 SCJG, 公安分局 GAFJ, 交警支队 JJZD.

Each agency is one ``LoopbackHTTPServer`` (127.0.0.1 only) rendering its book in its own
dialect (sandbox.rest_dialects). It records received licences (deduplicated by message id;
a replay with a different payload is 409), answers with receipts, serves penalties after a
sequence number, and honours the faults queued in its book — only on the push and pull
endpoints, so a probe still sees the agency up:

    TIMEOUT     hold the request ``timeout_sleep`` seconds, then answer normally
    ERROR_500   500 with a JSON error
    RATE_LIMIT  429 with Retry-After
    DROP        close the connection without a response
    REPEAT      serve the previous page's records again

Run ``python -m sandbox.rest_agencies`` to start all three on fixed ports.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import socket
import ssl
import threading
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sandbox.core import AgencyBook, Fault, LoopbackHTTPServer, PenaltyDraft, ReplayConflict
from sandbox.rest_dialects import REST_DIALECTS, RestDialect

__all__ = ["RunningAgency", "start_rest_agency"]


@dataclass
class _State:
    dialect: RestDialect
    book: AgencyBook
    token: str | None
    timeout_sleep: float
    retry_after: str
    stopping: threading.Event = field(default_factory=threading.Event)
    scripted: deque = field(default_factory=deque)  # canned (status, body, headers) answers, served first


class _AgencyServer(LoopbackHTTPServer):
    """A loopback server that may speak TLS; the handshake runs in the request's thread."""

    def __init__(self, handler, port: int, state: _State, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(handler, port)
        self.state = state
        self.ssl_context = ssl_context
        self._open: set[socket.socket] = set()  # live connections, cut on stop like a real outage
        self._open_lock = threading.Lock()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.server_address[1]}"

    def get_request(self):
        sock, address = super().get_request()
        if self.ssl_context:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self._open_lock:
            self._open.add(sock)
        return sock, address

    def shutdown_request(self, request) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        super().stop()
        with self._open_lock:
            live, self._open = list(self._open), set()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        # Clients that hang up (timeouts, refused certificates) are routine here, not tracebacks.
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError, TimeoutError, OSError)):
            return
        super().handle_error(request, client_address)


def _encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> int:
    text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    prefix, _, number = text.partition(":")
    if prefix != "after":
        raise ValueError("not a cursor of ours")
    return int(number)


def _put(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _date(text: str, fmt: str) -> str:
    try:
        return dt.date.fromisoformat(text).strftime(fmt)
    except ValueError:
        return text  # a malformed date stays as the agency (wrongly) wrote it


def _number(text: str) -> Any:
    try:
        value = Decimal(text)
    except ArithmeticError:
        return text
    # float repr is the shortest text that round-trips, so the JSON carries exactly these digits
    return int(value) if value == value.to_integral_value() else float(value)


def render_penalty(draft: PenaltyDraft, dialect: RestDialect) -> dict[str, Any]:
    """The draft as this agency's JSON record."""
    fine = draft.amount_text(dialect.fine_unit)
    if fine is not None and dialect.fine_as_number and fine[-1].isdigit():
        fine = _number(fine)
    values = {
        "seq": draft.seq, "record_id": draft.record_id, "subject_name": draft.subject_name, "uscc": draft.uscc,
        "decision_no": draft.decision_no, "violation_type": draft.violation_type, "facts": draft.facts,
        "legal_basis": draft.legal_basis, "content": draft.content, "fine": fine,
        "penalties": dialect.list_separator.join(dialect.penalty_codes.get(p, p) for p in draft.penalties),
        "decision_date": _date(draft.decision_date, dialect.date_format),
        "validity_end": _date(draft.validity_end, dialect.date_format),
    }  # fmt: skip
    record = {native: values[attr] for attr, native in dialect.penalty_fields.items()}
    record.update(dialect.constant_fields)
    return record


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the client's connection pool is exercised
    timeout = 5  # idle keep-alive connections end on their own
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _AgencyServer

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

    # --- plumbing ----------------------------------------------------------------------
    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _refused(self) -> bool:
        """Answer auth failures, canned answers and faults; True when the request is already answered."""
        state = self.server.state
        if state.token and self.headers.get("Authorization") != f"Bearer {state.token}":
            self._send(401, {"error": "unauthorized", "message": "missing or wrong bearer token"})
            return True
        if state.scripted:
            status, body, headers = state.scripted.popleft()
            self._send(status, body, headers)
            return True
        fault = state.book.next_fault()
        if fault == Fault.TIMEOUT:
            state.stopping.wait(state.timeout_sleep)
        elif fault == Fault.ERROR_500:
            self._send(500, {"error": "internal", "message": "服务器内部错误"})
            return True
        elif fault == Fault.RATE_LIMIT:
            self._send(429, {"error": "rate_limited"}, {"Retry-After": state.retry_after})
            return True
        elif fault == Fault.DROP:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return True
        self._repeat = fault == Fault.REPEAT
        return False

    # --- routes ------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        dialect = self.server.state.dialect
        url = urlsplit(self.path)
        if url.path == dialect.probe_path:
            self._send(200, {"status": "ok", "agency": dialect.code})
        elif url.path == dialect.pull_path:
            if not self._refused():
                self._pull({k: v[-1] for k, v in parse_qs(url.query).items()})
        else:
            self._send(404, {"error": "not_found", "path": url.path})

    def do_POST(self) -> None:  # noqa: N802
        dialect = self.server.state.dialect
        body = self._body()
        if urlsplit(self.path).path != dialect.push_path:
            self._send(404, {"error": "not_found"})
        elif not self._refused():
            self._push(body)

    def _pull(self, query: dict[str, str]) -> None:
        state = self.server.state
        dialect, book = state.dialect, state.book
        try:
            limit = int(query.get(dialect.param("limit"), "50"))
            if not 1 <= limit <= dialect.max_page_size:
                raise ValueError(f"page size must be 1..{dialect.max_page_size}")
            if dialect.pagination == "cursor":
                token = query.get(dialect.param("cursor"))
                after = _decode_token(token) if token else 0
            elif dialect.pagination == "offset":
                after = int(query.get(dialect.param("offset"), "0"))
            else:
                after = (int(query.get(dialect.param("page"), "1")) - 1) * limit
            if after < 0:
                raise ValueError("position must not be negative")
        except ValueError as exc:
            self._send(400, {"error": "bad_request", "message": str(exc)})
            return
        start = max(0, after - limit) if self._repeat else after
        drafts = book.penalties_after(start, limit)
        last = drafts[-1].seq if drafts else after
        total = len(book.penalties)
        answer: dict[str, Any] = json.loads(json.dumps(dialect.envelope_extra))
        _put(answer, dialect.items_path, [render_penalty(d, dialect) for d in drafts])
        for role, value in (("next_cursor", _encode_token(last)), ("has_more", last < total), ("total", total)):
            if role in dialect.envelope:
                _put(answer, dialect.envelope[role], value)
        self._send(200, answer)

    def _push(self, body: bytes) -> None:
        dialect, book = self.server.state.dialect, self.server.state.book
        try:
            data = json.loads(body)
            if dialect.delivery == "single":
                message_id = self.headers.get(dialect.idempotency_header)
                if not message_id or not isinstance(data, dict):
                    raise ValueError(f"a licence object and the {dialect.idempotency_header} header are required")
                items = [(message_id, data)]
            else:
                items = [(i[dialect.message_id_field], i[dialect.payload_field]) for i in data[dialect.batch_field]]
                if not all(isinstance(m, str) and isinstance(p, dict) for m, p in items):
                    raise ValueError("each item needs a message id and a licence object")
        except (ValueError, KeyError, TypeError) as exc:
            self._send(400, {"error": "bad_request", "message": str(exc)})
            return
        receipts = []
        for message_id, payload in items:
            try:
                ack = book.receive(message_id, payload)
            except ReplayConflict as exc:
                self._send(409, {"error": "replay_conflict", "message": str(exc)})
                return
            receipts.append({
                dialect.receipt_field("message_id"): message_id,
                dialect.receipt_field("ack_id"): ack.ack_id,
                dialect.receipt_field("received_at"): ack.received_at.isoformat(),
                dialect.receipt_field("digest"): ack.digest,
                dialect.receipt_field("duplicate"): ack.duplicate,
            })  # fmt: skip
        if dialect.delivery == "single":
            self._send(200, receipts[0])
        else:
            answer: dict[str, Any] = {}
            _put(answer, dialect.receipt_field("items"), receipts)
            self._send(200, answer)


@dataclass
class RunningAgency:
    """A started sandbox agency: where it listens, its book, and how to stop it."""

    code: str
    endpoint: str
    book: AgencyBook
    dialect: RestDialect
    token: str | None
    server: _AgencyServer

    def queue_response(self, status: int, body: bytes | str | dict, headers: dict[str, str] | None = None) -> None:
        """Answer the next push or pull with exactly this (e.g. a proxy's HTML error page)."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.server.state.scripted.append((status, data, headers or {}))

    def stop(self) -> None:
        self.server.state.stopping.set()
        self.server.stop()


def start_rest_agency(
    code: str,
    *,
    book: AgencyBook | None = None,
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    token: str | None = None,
    dialect: RestDialect | None = None,
    timeout_sleep: float = 35.0,
    retry_after: str = "2",
    **book_options: Any,
) -> RunningAgency:
    """Start one REST agency on 127.0.0.1 and return it running.

    Args:
        code: SCJG, GAFJ or JJZD — or any code when ``dialect`` is given.
        book: the agency's state; a fresh AgencyBook (with ``book_options``) by default.
        port: 0 for an ephemeral port.
        ssl_context: a server-side context to speak HTTPS (and require client certificates).
        token: the bearer token to demand; the dialect's default for bearer agencies.
        dialect: a data-only dialect for an agency not built in.
        timeout_sleep: how long a TIMEOUT fault holds a request (longer than the client's read timeout).
        retry_after: the Retry-After a RATE_LIMIT fault sends (seconds or an HTTP-date).
    """
    dialect = dialect or REST_DIALECTS[code]
    if book is None:
        book = AgencyBook(code=dialect.code, name=dialect.name, uscc=dialect.uscc,
                          subject_fields=dialect.licence_subject, **book_options)  # fmt: skip
    if token is None and dialect.auth == "bearer":
        token = dialect.default_token
    state = _State(dialect=dialect, book=book, token=token, timeout_sleep=timeout_sleep, retry_after=retry_after)
    server = _AgencyServer(_Handler, port, state, ssl_context).start()
    return RunningAgency(code=dialect.code, endpoint=server.url, book=book, dialect=dialect, token=token, server=server)


def _main() -> None:  # pragma: no cover - a manual convenience
    import time

    running = [start_rest_agency(code, port=18101 + i) for i, code in enumerate(REST_DIALECTS)]
    for agency in running:
        print(f"{agency.code}\t{agency.endpoint}\ttoken={agency.token or '-'}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        for agency in running:
            agency.stop()


if __name__ == "__main__":  # pragma: no cover
    _main()
