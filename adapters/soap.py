"""SOAP adapter (zeep): licences out through one WSDL operation, penalties back through another.

Which operations, and where every field sits in the request and the response, is data
(the agency file's ``[soap]`` table, validated by :class:`SoapConfig`); the WSDL itself is
a file in contracts/wsdl/, never fetched from the agency. Native payloads are flat dicts
whose keys are dotted element paths (``party.name``), so the mapping in contracts/ stays
protocol-agnostic.

Every zeep / requests / lxml error is translated in one place, :func:`_translated`:

    zeep Fault soap:Client, VersionMismatch, MustUnderstand   -> FatalError   (our request is wrong)
    zeep Fault soap:Server                                    -> TransientError
    HTTP 408, 429, 5xx (Retry-After honoured), 500 sans fault -> TransientError
    other HTTP 4xx                                            -> FatalError
    connection refused / reset / dropped, timeouts            -> TransientError
    TLS handshake refused (either side's certificate)         -> ConfigurationError
    no agency signing certificate on file valid now           -> ConfigurationError
    DTD, entities, external refs, not-XML, bad WS-Security    -> RefusedInput on fetch, FatalError on deliver
    response that breaks the WSDL (zeep parse / validation)   -> FatalError
    request that breaks the WSDL (a wrong field path)         -> ConfigurationError

Hostile or corrupt responses are refused whole. On fetch that is ``RefusedInput``: the page is
quarantined and nothing of it is stored. On deliver the seam allows only transient / fatal /
configuration errors, and an agency answering a licence with hostile XML needs a person, so it
is ``FatalError`` (the ack inside cannot be trusted; a resend later is deduplicated by message id).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
import zeep
import zeep.exceptions as zx
from pydantic import ValidationError
from zeep.helpers import serialize_object

from adapters.http_headers import retry_after_seconds
from adapters.http_session import AgencySession
from adapters.base import (Cursor, Health, InboundRecord, OutboundMessage, Page, Receipt, Rejected, dotted_get,
                           item_fields)
from adapters.soap_config import AckPaths, AgencyCertificateUnusable, SoapConfig, WsseConfig
from certs.rotation import ROTATION_FILE
from contracts.validation import describe_errors
from hub.errors import ConfigurationError, FatalError, HubError, RefusedInput, TransientError

if TYPE_CHECKING:
    from adapters import AdapterContext
    from contracts.registry import AgencySpec

__all__ = ["AckPaths", "SoapAdapter", "SoapConfig", "WsseConfig", "from_spec", "reset_clients"]


# --- one zeep client per process per (wsdl, endpoint, transport settings, files' contents) ---
class _HttpStatus(zx.TransportError):
    """A status SOAP 1.1 does not use (it answers 200, or 500 with a fault), seen before zeep reads the body.

    Stopping here keeps Retry-After, and stops zeep taking an HTML error page for an "unknown fault".
    """

    def __init__(self, status_code: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status_code}", status_code=status_code)
        self.retry_after = retry_after


class _Transport(zeep.Transport):
    def post(self, address: str, message: bytes, headers: dict[str, str]) -> requests.Response:
        response = super().post(address, message, headers)
        if response.status_code not in (200, 500):
            raise _HttpStatus(response.status_code, retry_after_seconds(response.headers.get("Retry-After")))
        return response


_CLIENTS: dict[tuple, tuple[tuple, zeep.Client, Any]] = {}  # key -> (files' identity, client, service)
_CLIENTS_LOCK = threading.Lock()


def _client_key(cfg: SoapConfig) -> tuple:
    return (str(cfg.wsdl_path), cfg.endpoint, cfg.binding, cfg.connect_timeout, cfg.read_timeout,
            cfg.ca_file, cfg.client_cert, cfg.client_key, cfg.signing_cert, cfg.signing_key, cfg.agency_cert,
            cfg.wsse, cfg.password.get_secret_value() if cfg.password else None)  # fmt: skip


def _identity(path: Path | None) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path) if path is not None else None
    except OSError:
        return None
    return None if stat is None else (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _files_identity(cfg: SoapConfig) -> tuple:
    """What the cached client read from disk: a rotation (or any replaced file) rebuilds it, so a
    running worker signs with the new key and verifies against the new certificates without a restart.
    Files are replaced by rename (certs.pkifiles), so the inode changes even within one mtime tick."""
    paths = [cfg.ca_file, cfg.client_cert, cfg.client_key, cfg.signing_cert, cfg.signing_key, cfg.agency_cert]
    if cfg.agency_cert is not None:
        paths.append(Path(cfg.agency_cert).parent / ROTATION_FILE)  # what accepted_in_file consults
    return tuple(_identity(path) for path in paths)


def _settings() -> zeep.Settings:
    # strict: a response that breaks the WSDL is an error, not silently half-read.
    return zeep.Settings(strict=True, forbid_dtd=True, forbid_entities=True, forbid_external=True,
                         xml_huge_tree=False)  # fmt: skip


def _service(cfg: SoapConfig) -> tuple[zeep.Client, Any]:
    key, identity = _client_key(cfg), _files_identity(cfg)
    with _CLIENTS_LOCK:
        cached = _CLIENTS.get(key)
        if cached is None or cached[0] != identity:
            # The replaced client is not closed: an adapter built before may still be using it.
            _CLIENTS[key] = (identity, *_build_client(cfg))
        return _CLIENTS[key][1], _CLIENTS[key][2]


def _build_client(cfg: SoapConfig) -> tuple[zeep.Client, Any]:
    if not cfg.wsdl_path.is_file():
        raise ConfigurationError(f"agency {cfg.code}: WSDL {cfg.wsdl} not found in contracts/wsdl/")
    session = AgencySession(connect_timeout=cfg.connect_timeout, read_timeout=cfg.read_timeout,
                            ca_file=cfg.ca_file, client_cert=cfg.client_cert, client_key=cfg.client_key)  # fmt: skip
    transport = _Transport(session=session, timeout=cfg.connect_timeout, operation_timeout=session.timeout)
    wsse = None
    if cfg.wsse is not None:
        from adapters.soap_wsse import build_wsse  # xmlsec is only needed by agencies that sign

        wsse = build_wsse(cfg)
    try:
        client = zeep.Client(str(cfg.wsdl_path), transport=transport, settings=_settings(), wsse=wsse)
        binding = cfg.binding
        if not binding.startswith("{"):
            names = [name for name in client.wsdl.bindings if name.endswith("}" + binding)]
            if len(names) != 1:
                raise ConfigurationError(f"agency {cfg.code}: binding {binding!r} not in {cfg.wsdl}")
            binding = names[0]
        service = client.create_service(binding, cfg.endpoint)
        for operation in (cfg.push_operation, cfg.pull_operation):
            service._binding.get(operation)
    except (zx.Error, ValueError, KeyError) as exc:
        raise ConfigurationError(f"agency {cfg.code}: cannot use {cfg.wsdl}: {exc}") from exc
    return client, service


def reset_clients() -> None:
    """Close and forget every cached zeep client (tests, and worker shutdown)."""
    with _CLIENTS_LOCK:
        for _, client, _ in _CLIENTS.values():
            client.transport.session.close()
        _CLIENTS.clear()


# --- error translation: the one place ------------------------------------------------------
_HOSTILE = (zx.DTDForbidden, zx.EntitiesForbidden, zx.ExternalReferenceForbidden, zx.XMLSyntaxError,
            zx.SignatureVerificationFailed)  # fmt: skip


def _fault_code(code: str | None) -> str:
    # "soap:Client", "{ns}Client" and "Client.Authentication" all name the Client class.
    return (code or "").rsplit("}", 1)[-1].rsplit(":", 1)[-1].split(".", 1)[0]


@contextmanager
def _translated(agency: str, operation: str, *, hostile: type[HubError]) -> Iterator[None]:
    where = f"agency {agency}: {operation}"
    try:
        yield
    except HubError:
        raise
    except AgencyCertificateUnusable as exc:
        raise ConfigurationError(f"{where}: cannot check the answer's WS-Security signature: {exc}; "
                                 "install the agency's current signing certificate") from exc
    except zx.Fault as exc:
        code = _fault_code(exc.code)
        if not code:  # HTTP 500 whose body is XML but no SOAP fault: a broken server, not our request
            raise TransientError(f"{where}: HTTP 500 without a SOAP fault", status=500) from exc
        kind = TransientError if code == "Server" else FatalError
        raise kind(f"{where}: SOAP fault {code}: {exc.message}", fault_code=code) from exc
    except _HttpStatus as exc:
        status = exc.status_code
        kind = TransientError if status >= 500 or status in (408, 429) else FatalError
        raise kind(f"{where}: HTTP {status}", status=status, retry_after=exc.retry_after) from exc
    except zx.TransportError as exc:
        status = exc.status_code
        if status == 200:  # zeep wraps an unparseable 200 body as a TransportError
            raise hostile(f"{where}: response is not XML: {exc.message[:200]}", status=status) from exc
        kind = TransientError if status >= 500 or status == 429 else FatalError
        raise kind(f"{where}: HTTP {status}", status=status) from exc
    except _HOSTILE as exc:
        raise hostile(f"{where}: response refused: {type(exc).__name__}: {exc}") from exc
    except (zx.XMLParseError, zx.UnexpectedElementError, zx.ValidationError) as exc:
        raise FatalError(f"{where}: message does not match {agency}'s WSDL: {exc}") from exc
    except TypeError as exc:  # zeep: an element our field paths name is not in the WSDL
        raise ConfigurationError(f"{where}: request does not fit the WSDL: {exc}") from exc
    except requests.exceptions.SSLError as exc:
        # a certificate refused either way: fixing the TLS files helps, retrying does not (as in REST)
        raise ConfigurationError(f"{where}: TLS handshake failed (check CA and client certificate): {exc}") from exc
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as exc:  # fmt: skip
        raise ConfigurationError(f"{where}: bad endpoint: {exc}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise TransientError(f"{where}: {type(exc).__name__}: {exc}") from exc
    except zx.Error as exc:
        raise FatalError(f"{where}: {type(exc).__name__}: {exc}") from exc


# --- paths ---------------------------------------------------------------------------------
def _nest(flat: dict[str, str], paths: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = paths.get(name, name).split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


class SoapAdapter:
    """An agency reached over SOAP, described entirely by its :class:`SoapConfig`."""

    read_ahead = True  # the cursor is the whole request
    receipt_wait = 0.0  # the receipt is the response

    def __init__(self, config: SoapConfig) -> None:
        self.config = config
        self.code = config.code
        self._client, self._service = _service(config)

    def _call(self, operation: str, *, hostile: type[HubError], **request: Any) -> dict[str, Any]:
        """Call ``operation`` and return its response element as a plain dict."""
        with _translated(self.code, operation, hostile=hostile):
            result = getattr(self._service, operation)(**request)
            body = self._service._binding.get(operation).output.body
        data = serialize_object(result, dict)
        if not isinstance(data, dict) or all(v is None for v in data.values()):
            # zeep skips a body element it does not know; silence must not read as "no records"
            raise FatalError(f"agency {self.code}: {operation}: response body does not match the WSDL")
        children = body.type.elements if body is not None else []
        if len(children) == 1 and not body.type.attributes:
            data = {children[0][0]: data}  # zeep unwrapped the only child; our paths start above it
        return data

    def deliver(self, messages: Sequence[OutboundMessage]) -> list[Receipt]:
        """Send each licence with its message id; one receipt per message, from the agency's ack."""
        cfg, receipts = self.config, []
        for message in messages:
            request = {cfg.message_id_field: message.message_id,
                       cfg.licence_element: _nest(message.payload, cfg.push_paths)}  # fmt: skip
            data = self._call(cfg.push_operation, hostile=FatalError, **request)
            receipts.append(self._receipt(message, data))
        return receipts

    def _receipt(self, message: OutboundMessage, data: dict[str, Any]) -> Receipt:
        paths = self.config.ack
        ack_id, digest, when = (dotted_get(data, path) for path in (paths.ack_id, paths.digest, paths.received_at))
        if not ack_id or not digest or not isinstance(when, dt.datetime):
            raise FatalError(f"agency {self.code}: acknowledgement of {message.message_id} is incomplete")
        when = when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)
        duplicate = dotted_get(data, paths.duplicate)
        try:
            return Receipt(message_id=message.message_id, ack_id=str(ack_id), received_at=when, digest=str(digest),
                           duplicate=duplicate is True or str(duplicate).lower() == "true")  # fmt: skip
        except ValueError as exc:
            raise FatalError(f"agency {self.code}: acknowledgement of {message.message_id} is unusable: {exc}") from exc

    def fetch(self, after: Cursor) -> Page:
        """The next page of penalties after ``after.position`` (the last seq consumed)."""
        cfg = self.config
        request = {cfg.after_field: after.position, cfg.limit_field: cfg.page_size}
        data = self._call(cfg.pull_operation, hostile=RefusedInput, **request)
        items = dotted_get(data, cfg.items_path) or []
        items = items if isinstance(items, list) else [items]
        records, rejected, position = [], [], after.position
        unnumbered = 0  # items refused for lack of a number since the last numbered one: they may fill a gap
        for index, item in enumerate(items):
            raw = json.dumps(item, ensure_ascii=False, default=str, sort_keys=False)
            try:
                seq = int(dotted_get(item, cfg.seq_field))
            except (TypeError, ValueError):
                rejected.append(Rejected(ref=f"item {index}", reason=f"{cfg.seq_field} missing or not a number",
                                         raw=raw))  # fmt: skip
                unnumbered += 1
                continue
            if seq <= position:
                continue  # already consumed: an agency repeating a page must not move us backwards
            if seq - position - 1 > unnumbered:  # moving past a gap would lose the records in it for good
                raise FatalError(f"agency {self.code}: {cfg.pull_operation}: sequence jumps from {position} to {seq}")
            native = item_fields(item, cfg.item_paths)
            ref = dotted_get(item, cfg.record_id_field)
            records.append(InboundRecord(native=native, raw=raw, ref=str(ref) if ref else None))
            position, unnumbered = seq, 0
        more = dotted_get(data, cfg.has_more_path)
        if more is None:
            raise FatalError(f"agency {self.code}: {cfg.pull_operation}: response lacks {cfg.has_more_path}")
        return Page(records=records, next_cursor=Cursor(position=position), more=bool(more), rejected=rejected)

    def acknowledge(self, page: Page) -> None:
        """Nothing to do: the agency keeps no per-client state; the cursor is ours."""

    def probe(self) -> Health:
        """Fetch the agency's published WSDL; never raises."""
        started = time.monotonic()
        try:
            with _translated(self.code, "probe", hostile=FatalError):
                response = self._client.transport.session.get(self.config.endpoint, params="wsdl")
                response.raise_for_status()
        except HubError as exc:
            return Health(ok=False, detail=str(exc), latency_ms=(time.monotonic() - started) * 1000)
        except requests.HTTPError as exc:
            return Health(ok=False, detail=f"agency {self.code}: probe: {exc}",
                          latency_ms=(time.monotonic() - started) * 1000)  # fmt: skip
        return Health(ok=True, detail="WSDL served", latency_ms=(time.monotonic() - started) * 1000)

    def close(self) -> None:
        """Nothing per adapter: the zeep client is shared per process (see :func:`reset_clients`)."""


def from_spec(spec: AgencySpec, context: AdapterContext) -> SoapAdapter:
    """Build the adapter from an ``AgencySpec`` (its ``[soap]`` table) and an ``AdapterContext``."""
    tls = context.tls
    data = dict(spec.transport)
    data.update(
        code=spec.code, endpoint=spec.endpoint,
        connect_timeout=context.connect_timeout, read_timeout=context.read_timeout,
        ca_file=tls.ca, client_cert=tls.client_cert, client_key=tls.client_key,
        signing_cert=tls.hub_signing_cert, signing_key=tls.hub_signing_key, agency_cert=tls.agency_cert,
        password=context.secret,
    )  # fmt: skip
    try:
        config = SoapConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"agency {spec.code}: [soap]: {describe_errors(exc)}") from exc
    return SoapAdapter(config)
