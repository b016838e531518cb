"""SOAP front-ends of the simulated 国税局 (GSJ) and 地税局 (DSJ), over ``sandbox.core.AgencyBook``.

Each agency publishes its own WSDL (contracts/wsdl/, served at ``?wsdl`` with this server's
address) and speaks its own dialect: GSJ English-ish names, yuan, ISO dates, English
penalty words; DSJ pinyin names, 万元, ``yyyyMMdd`` dates, two-digit penalty codes.

Requests are parsed the way a careful agency would: no DTD, no entities, no network; a
request carrying a DOCTYPE is refused with a ``soap:Client`` fault and nothing is recorded.
Injected faults (``Fault.*`` in the book) are honoured before a request is looked at.

Run one by hand: ``python -m sandbox.soap_agencies GSJ --port 18201``.
"""

from __future__ import annotations

import argparse
import ssl
import sys
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from lxml import etree

from sandbox.core import AgencyBook, Fault, LoopbackHTTPServer, ReplayConflict
from sandbox.soap_dialects import DIALECTS, Dialect, Tree

__all__ = ["DIALECTS", "Dialect", "RunningAgency", "SoapSecurity", "start_soap_agency"]

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
WSDL_DIR = Path(__file__).resolve().parent.parent / "contracts" / "wsdl"
MAX_BODY = 1 << 20  # a licence is a few KB; anything near a megabyte is not one


class SoapSecurity(Protocol):
    """WS-Security at the agency: check what arrives, sign what leaves (see sandbox.soap_wsse)."""

    def verify_request(self, envelope: etree._Element) -> None:
        """Raise ValueError (the reason) when the request's security header is not acceptable."""

    def sign_response(self, envelope: etree._Element) -> None:
        """Sign the outgoing envelope in place."""


class SoapFault(Exception):
    """Answer with a SOAP 1.1 fault: ``code`` is Client (the caller's fault) or Server (ours)."""

    def __init__(self, code: str, reason: str, status: int = 500) -> None:
        super().__init__(reason)
        self.code, self.reason, self.status = code, reason, status


def _safe_parse(body: bytes) -> etree._Element:
    # resolve_entities=False and no_network=True keep billion laughs and XXE inert; the DOCTYPE
    # check then refuses the request outright, because a legitimate SOAP client never sends one.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        # before parsing: libxml2 stops a billion-laughs body with an amplification error that names no DTD
        raise SoapFault("Client", "DOCTYPE / DTD declarations are not accepted")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                             huge_tree=False, remove_comments=True)  # fmt: skip
    try:
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise SoapFault("Client", f"request is not well-formed XML: {exc}") from exc
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or info.externalDTD is not None:
        raise SoapFault("Client", "DOCTYPE / DTD declarations are not accepted")
    if root.tag != f"{{{SOAP_ENV}}}Envelope":
        raise SoapFault("Client", "not a SOAP 1.1 envelope")
    return root


def _flatten(element: etree._Element, prefix: str = "") -> dict[str, str]:
    """The agency's own record of a licence: leaf elements keyed by dotted path, text verbatim."""
    flat: dict[str, str] = {}
    for child in element:
        if not isinstance(child.tag, str):
            continue
        name = prefix + etree.QName(child).localname
        if len(child):
            flat.update(_flatten(child, name + "."))
        else:
            flat[name] = child.text or ""
    return flat


def _render(parent: etree._Element, ns: str, tree: Tree) -> None:
    for name, value in tree.items():
        for item in value if isinstance(value, list) else [value]:
            if item is None:
                continue
            child = etree.SubElement(parent, f"{{{ns}}}{name}")
            if isinstance(item, dict):
                _render(child, ns, item)
            else:
                child.text = str(item)


def _envelope() -> tuple[etree._Element, etree._Element]:
    env = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV})
    etree.SubElement(env, f"{{{SOAP_ENV}}}Header")
    return env, etree.SubElement(env, f"{{{SOAP_ENV}}}Body")


def _int(text: str | None, name: str, low: int, high: int) -> int:
    try:
        value = int((text or "").strip())
    except ValueError as exc:
        raise SoapFault("Client", f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise SoapFault("Client", f"{name} must be between {low} and {high}")
    return value


class _SoapServer(LoopbackHTTPServer):
    dialect: Dialect
    book: AgencyBook
    security: SoapSecurity | None
    timeout_seconds: float
    retry_after: int
    endpoint: str
    wsdl: bytes  # as served at ?wsdl, with this server's address in it
    last_after: int | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client refused at the TLS handshake or hanging up is routine here, not a traceback
        if not isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _SoapServer
    protocol_version = "HTTP/1.1"
    # headers and body go out as separate writes: with Nagle on, each keep-alive response waited
    # for the client's delayed ACK (~40 ms), which capped the agency at ~22 calls a second and
    # made that the push benchmark's "ceiling"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - keep test output quiet
        pass

    # --- WSDL ------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        if url.path != self.server.dialect.path or url.query.lower() != "wsdl":
            return self._send(404, b"not found", "text/plain")
        self._send(200, self.server.wsdl, "text/xml; charset=utf-8")

    # --- SOAP ------------------------------------------------------------------------------
    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            return self._fault(SoapFault("Client", f"request body over {MAX_BODY} bytes", status=413))
        body = self.rfile.read(length)
        fault = self.server.book.next_fault()
        if fault == Fault.TIMEOUT:
            time.sleep(self.server.timeout_seconds)
            self.close_connection = True
            return None
        if fault == Fault.DROP:
            self.close_connection = True  # no status line at all: the client sees the socket close
            return None
        if fault == Fault.RATE_LIMIT:
            return self._send(429, b"rate limited", "text/plain", {"Retry-After": str(self.server.retry_after)})
        if fault == Fault.ERROR_500:
            return self._fault(SoapFault("Server", "internal error (injected)"))
        if urlsplit(self.path).path != self.server.dialect.path:
            return self._send(404, b"not found", "text/plain")
        try:
            envelope = _safe_parse(body)
            if self.server.security is not None:
                try:
                    self.server.security.verify_request(envelope)
                except ValueError as exc:
                    raise SoapFault("Client", f"WS-Security: {exc}") from exc
            answer = self._dispatch(envelope, repeat=fault == Fault.REPEAT)
        except SoapFault as exc:
            return self._fault(exc)
        except Exception as exc:  # noqa: BLE001 - an agency answers a Server fault, never a traceback
            return self._fault(SoapFault("Server", f"internal error: {type(exc).__name__}"))
        env, soap_body = _envelope()
        name, tree = answer
        element = etree.SubElement(soap_body, f"{{{self.server.dialect.ns}}}{name}",
                                   nsmap={"tns": self.server.dialect.ns})  # fmt: skip
        _render(element, self.server.dialect.ns, tree)
        self._send_envelope(200, env)

    def _dispatch(self, envelope: etree._Element, *, repeat: bool) -> tuple[str, Tree]:
        d = self.server.dialect
        body = envelope.find(f"{{{SOAP_ENV}}}Body")
        request = next((c for c in body if isinstance(c.tag, str)), None) if body is not None else None
        if request is None:
            raise SoapFault("Client", "empty SOAP body")
        if request.tag == f"{{{d.ns}}}{d.push_element}":
            return d.push_response, self._receive(request)
        if request.tag == f"{{{d.ns}}}{d.pull_element}":
            return d.pull_response, self._penalties(request, repeat)
        raise SoapFault("Client", f"unknown operation {etree.QName(request).localname}")

    def _receive(self, request: etree._Element) -> Tree:
        d = self.server.dialect
        message_id = (request.findtext(f"{{{d.ns}}}{d.message_id}") or "").strip()
        licence = request.find(f"{{{d.ns}}}{d.licence}")
        if not message_id or licence is None:
            raise SoapFault("Client", f"{d.message_id} and {d.licence} are required")
        payload = _flatten(licence)
        name_field, uscc_field = d.subject_fields
        if not payload.get(name_field):
            raise SoapFault("Client", f"{d.licence}.{name_field} is required")
        try:
            ack = self.server.book.receive(message_id, payload)
        except ReplayConflict as exc:
            raise SoapFault("Client", str(exc)) from exc
        return d.render_ack(ack)

    def _penalties(self, request: etree._Element, repeat: bool) -> Tree:
        d = self.server.dialect
        after = _int(request.findtext(f"{{{d.ns}}}{d.after}"), d.after, 0, 2**62)
        limit = _int(request.findtext(f"{{{d.ns}}}{d.limit}"), d.limit, 1, 1000)
        if repeat and self.server.last_after is not None:
            after = self.server.last_after  # the previous page, served again
        self.server.last_after = after
        items = self.server.book.penalties_after(after, limit)
        more = after + len(items) < len(self.server.book.penalties)  # sequence numbers are dense
        return d.render_page(items, more)

    # --- writing ---------------------------------------------------------------------------
    def _fault(self, fault: SoapFault) -> None:
        env, body = _envelope()
        node = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
        etree.SubElement(node, "faultcode").text = f"soap:{fault.code}"
        etree.SubElement(node, "faultstring").text = fault.reason
        self._send_envelope(fault.status, env)

    def _send_envelope(self, status: int, env: etree._Element) -> None:
        if self.server.security is not None:
            self.server.security.sign_response(env)
        self._send(status, etree.tostring(env, xml_declaration=True, encoding="utf-8"), "text/xml; charset=utf-8")

    def _send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


@dataclass
class RunningAgency:
    """A started SOAP agency: where it listens and what it holds."""

    code: str
    endpoint: str
    book: AgencyBook
    server: _SoapServer = field(repr=False)

    @property
    def wsdl_url(self) -> str:
        return self.endpoint + "?wsdl"

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.stop()


def _published_wsdl(name: str, endpoint: str) -> bytes:
    """The WSDL file ``name`` with every service address set to ``endpoint``, as the agency serves it."""
    doc = etree.fromstring((WSDL_DIR / name).read_bytes(), etree.XMLParser(resolve_entities=False, no_network=True))
    for address in doc.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address"):
        address.set("location", endpoint)
    return etree.tostring(doc, xml_declaration=True, encoding="utf-8")


def default_book(code: str, **kw: Any) -> AgencyBook:
    """A fresh book for the dialect ``code`` (its name, USCC and licence field names)."""
    d = DIALECTS[code]
    return AgencyBook(code=d.code, name=d.name, uscc=d.uscc, subject_fields=d.subject_fields, **kw)


def start_soap_agency(
    code: str,
    *,
    book: AgencyBook | None = None,
    port: int = 0,
    ssl_context: Any = None,
    security: SoapSecurity | None = None,
    timeout_seconds: float = 2.0,
    retry_after: int = 7,
    **book_options: Any,
) -> RunningAgency:
    """Start the SOAP agency ``code`` ("GSJ" or "DSJ") on 127.0.0.1 in a daemon thread.

    Args:
        code: which dialect to speak.
        book: the agency's state; a fresh AgencyBook (with ``book_options``) by default.
        port: 0 for an ephemeral port.
        ssl_context: a server-side ``ssl.SSLContext`` (mTLS: set ``verify_mode`` and load the CA).
        security: WS-Security checks and response signing, when the agency demands it.
        timeout_seconds: how long an injected ``Fault.TIMEOUT`` holds a request before closing it.
        retry_after: the Retry-After seconds sent with an injected 429.
    """
    dialect = DIALECTS[code]
    server = _SoapServer(_Handler, port=port)
    server.dialect, server.book = dialect, book or default_book(code, **book_options)
    server.security, server.timeout_seconds, server.retry_after = security, timeout_seconds, retry_after
    scheme = "http"
    if ssl_context is not None:
        # the handshake happens on first read, in the request's own thread, not in the accept loop
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    server.endpoint = endpoint = f"{scheme}://127.0.0.1:{server.server_address[1]}{dialect.path}"
    server.wsdl = _published_wsdl(dialect.wsdl, endpoint)
    server.start()
    return RunningAgency(code=code, endpoint=endpoint, book=server.book, server=server)


def main() -> None:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(description="Run a sandbox SOAP agency on 127.0.0.1")
    parser.add_argument("code", choices=sorted(DIALECTS))
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    agency = start_soap_agency(args.code, port=args.port)
    print(f"{agency.code} listening at {agency.endpoint} (WSDL: {agency.wsdl_url})", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        agency.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
