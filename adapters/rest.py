"""REST/JSON agencies over requests: batch or single delivery, cursor / page / offset pulls.

Everything an agency does differently (paths, pagination style, query-parameter and
response-field names, receipt fields, auth) is data in its ``[rest]`` table, validated by
``RestConfig``. Errors from requests and from the agency's answers are translated once, in
``_exchange``; the adapter never retries (the job level does, honouring ``retry_after``).

Pull positions: ``Cursor.position`` counts the agency's records consumed so far. Agencies
number their records densely from 1 (``fields.sequence``), so a record at or below the
position is one we already hold (an agency repeating a page) and is dropped here.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any, Literal

import requests
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from adapters import AdapterContext
from adapters.rest_json import JsonShapeError, split_items
from adapters.http_headers import retry_after_seconds
from adapters.http_session import AgencySession
from adapters.base import CURSOR_TOKEN_MAX, Cursor, Health, InboundRecord, OutboundMessage, Page, Receipt, dotted_get
from contracts.validation import describe_errors
from contracts.registry import AgencySpec
from hub.errors import ConfigurationError, FatalError, HubError, TransientError

__all__ = ["PageFields", "QueryParams", "ReceiptFields", "RestAdapter", "RestConfig", "from_spec"]


class QueryParams(BaseModel):
    """Names of the query parameters the agency reads, per pagination style."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cursor: str = "cursor"  # cursor style: the agency's opaque token
    offset: str = "offset"  # offset style
    page: str = "page"  # page style, 1-based
    limit: str = "limit"  # page size, every style


class PageFields(BaseModel):
    """Where things are in a pull response. Dotted names reach into nested objects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: str = "items"
    next_cursor: str = "nextCursor"  # cursor style
    has_more: str | None = None  # a boolean the agency sets, if it has one
    total: str | None = None  # total record count, if the agency gives one
    sequence: str | None = "seq"  # dense 1-based record number; None: count records instead
    record_id: str | None = None  # defaults to the violation mapping's record_id


class ReceiptFields(BaseModel):
    """Field names of the agency's delivery acknowledgement."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: str = "receipts"  # batch delivery: the list of receipts
    message_id: str = "messageId"
    ack_id: str = "ackId"
    received_at: str = "receivedAt"
    digest: str = "digest"
    duplicate: str | None = "duplicate"


_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what a bearer token may hold in a header


class RestConfig(BaseModel):
    """Typed config of one REST agency: its ``[rest]`` table plus endpoint, secrets and timeouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str
    push_path: str
    pull_path: str
    probe_path: str | None = None  # None: a one-record pull
    pagination: Literal["cursor", "page", "offset"]
    page_size: int = Field(100, ge=1, le=10000)
    params: QueryParams = Field(default_factory=QueryParams)
    fields: PageFields = Field(default_factory=PageFields)
    delivery: Literal["batch", "single"] = "batch"
    batch_field: str = "licences"  # batch body: {batch_field: [{message_id_field, payload_field}]}
    message_id_field: str = "messageId"
    payload_field: str = "licence"
    idempotency_header: str = "Idempotency-Key"  # always sent; single delivery relies on it
    receipt: ReceiptFields = Field(default_factory=ReceiptFields)
    auth: Literal["none", "bearer", "mtls"] = "none"
    token: str | None = Field(None, repr=False)
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    ca_file: str | None = None  # verify the agency against this CA (https)
    client_cert: str | None = None
    client_key: str | None = None
    pool_size: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _credentials_present(self) -> "RestConfig":
        if self.auth == "bearer" and not self.token:
            raise ValueError("auth 'bearer' needs a token (the agency's credentials reference)")
        if self.auth == "mtls" and not (self.client_cert and self.client_key):
            raise ValueError("auth 'mtls' needs client_cert and client_key")
        if bool(self.client_cert) != bool(self.client_key):
            # one without the other used to be dropped silently: the agency then saw no certificate
            raise ValueError("client_cert and client_key go together: a certificate is presented only with its key")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {self.base_url!r} must start with http:// or https://")
        return self


@contextlib.contextmanager
def _translated(agency: str, action: str) -> Iterator[None]:
    # The one place requests' exceptions become the hub's. Order matters: SSLError and
    # ConnectTimeout are both ConnectionErrors to requests.
    where = f"agency {agency}: {action}"
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise ConfigurationError(f"{where}: TLS handshake failed (check CA and client certificate): {exc}") from exc
    except requests.exceptions.Timeout as exc:
        raise TransientError(f"{where}: timed out: {exc}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransientError(f"{where}: connection failed: {exc}") from exc
    except (requests.exceptions.ContentDecodingError, requests.exceptions.RetryError) as exc:
        raise TransientError(f"{where}: the answer arrived damaged: {exc}") from exc  # e.g. a truncated gzip body
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema, requests.exceptions.InvalidHeader) as exc:  # fmt: skip
        raise ConfigurationError(f"{where}: bad request configuration: {exc}") from exc
    except requests.exceptions.RequestException as exc:  # before OSError: requests' errors are OSErrors too
        raise FatalError(f"{where}: {exc}") from exc
    except OSError as exc:  # e.g. a certificate or CA file that cannot be read
        raise ConfigurationError(f"{where}: {exc}") from exc


_CHARSET = re.compile(r""";\s*charset\s*=\s*["']?([^"';\s]+)""", re.IGNORECASE)


def body_text(response: requests.Response, *, lenient: bool = False) -> str:
    """The body as text: in the charset its Content-Type names, else UTF-8 (JSON's own, RFC 8259).

    Not requests' guess: for text/* without a charset that is ISO-8859-1, which turns UTF-8 Chinese
    into mojibake without a single error, so nothing would be quarantined. ``lenient``: for an
    error's detail, bytes that do not decode are replaced rather than refused.

    Raises:
        ValueError: the body is not in that charset, or the charset is unknown (never when lenient).
    """
    declared = _CHARSET.search(response.headers.get("Content-Type", ""))
    charset = declared.group(1) if declared else "utf-8"
    try:
        codec = codecs.lookup(charset).name
    except LookupError as exc:
        if lenient:
            return response.content.decode("utf-8", "replace")
        raise ValueError(f"unknown charset {charset!r}") from exc
    # a byte order mark is allowed before UTF-8, and is not text
    return response.content.decode("utf-8-sig" if codec == "utf-8" else codec, "replace" if lenient else "strict")


def _raise_for_status(agency: str, action: str, response: requests.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    where = f"agency {agency}: {action}: HTTP {status}"
    detail = body_text(response, lenient=True)[:200].strip()
    if status in (408, 429) or status >= 500:
        raise TransientError(f"{where} {detail}", retry_after=retry_after_seconds(response.headers.get("Retry-After")))
    if status in (401, 403):
        # Our credentials or certificate are not accepted: retrying cannot help, fixing them does.
        raise ConfigurationError(f"{where}: credentials refused {detail}")
    raise FatalError(f"{where} {detail}")


class RestAdapter:
    """An agency behind a REST/JSON API. One pooled session per adapter; close() releases it."""

    read_ahead = True  # the cursor is the whole request
    receipt_wait = 0.0  # the receipt is the response

    def __init__(self, config: RestConfig, *, code: str = "REST", record_id_field: str | None = None) -> None:
        self.code = code
        self.config = config
        self._record_id = config.fields.record_id or record_id_field
        self._base = config.base_url.rstrip("/")
        # A [tls] table with our certificate and its key is enough to present it, whatever the auth
        # (mtls, or a bearer token on top of mutual TLS). RestConfig refuses one without the other.
        session = AgencySession(connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
                                ca_file=config.ca_file, client_cert=config.client_cert, client_key=config.client_key,
                                pool_size=config.pool_size)  # fmt: skip
        session.headers.update({"Accept": "application/json", "User-Agent": "shenguan-hub"})
        if config.auth == "bearer":
            session.headers["Authorization"] = f"Bearer {config.token}"
        self._session = session

    # --- the one exchange --------------------------------------------------------------
    def _exchange(self, method: str, path: str, action: str, **kwargs: Any) -> requests.Response:
        with _translated(self.code, action):
            response = self._session.request(method, self._base + path, **kwargs)
            _ = response.content  # read the body inside the translation: it may drop mid-way
        _raise_for_status(self.code, action, response)
        return response

    def _json(self, response: requests.Response, action: str) -> Any:
        try:
            text = body_text(response)
            return json.loads(text, parse_float=Decimal)  # amounts stay exact: never a float
        except ValueError as exc:
            raise FatalError(f"agency {self.code}: {action}: the answer is not JSON: {response.content[:120]!r}") from exc

    # --- deliver -----------------------------------------------------------------------
    def deliver(self, messages: Sequence[OutboundMessage]) -> list[Receipt]:
        """Send licence messages; one receipt per message, in order. Raises for the whole batch."""
        if not messages:
            return []
        if self.config.delivery == "single":
            return [self._deliver_one(m) for m in messages]
        cfg = self.config
        body = {cfg.batch_field: [{cfg.message_id_field: m.message_id, cfg.payload_field: m.payload} for m in messages]}
        headers = {cfg.idempotency_header: _batch_key(messages)}
        response = self._exchange("POST", cfg.push_path, "deliver", json=body, headers=headers)
        answer = self._json(response, "deliver")
        items = dotted_get(answer, cfg.receipt.items)
        if not isinstance(items, list):
            raise FatalError(f"agency {self.code}: deliver: no receipt list at {cfg.receipt.items!r}")
        by_id = {}
        for item in items:
            if isinstance(item, dict):
                by_id[str(item.get(cfg.receipt.message_id))] = item
        missing = [m.message_id for m in messages if m.message_id not in by_id]
        if missing:
            raise FatalError(f"agency {self.code}: deliver: no receipt for message(s) {', '.join(missing)}")
        return [self._receipt(m.message_id, by_id[m.message_id]) for m in messages]

    def _deliver_one(self, message: OutboundMessage) -> Receipt:
        if not message.message_id.isascii():  # it travels in an HTTP header
            raise FatalError(f"agency {self.code}: deliver: message id {message.message_id!r} is not ASCII")
        headers = {self.config.idempotency_header: message.message_id}
        response = self._exchange("POST", self.config.push_path, "deliver", json=message.payload, headers=headers)
        answer = self._json(response, "deliver")
        if not isinstance(answer, dict):
            raise FatalError(f"agency {self.code}: deliver: the receipt is not a JSON object")
        return self._receipt(message.message_id, answer)

    def _receipt(self, message_id: str, item: dict[str, Any]) -> Receipt:
        names = self.config.receipt
        try:
            received = dt.datetime.fromisoformat(str(item[names.received_at]))
            return Receipt(
                message_id=message_id,
                ack_id=_text(item[names.ack_id]),
                received_at=received,  # a time without an offset: Receipt reads it as UTC
                digest=_text(item[names.digest]),
                duplicate=bool(item.get(names.duplicate)) if names.duplicate else False,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FatalError(f"agency {self.code}: deliver: receipt for {message_id} is malformed: {exc}") from exc

    # --- fetch -------------------------------------------------------------------------
    def fetch(self, after: Cursor) -> Page:
        """One page of penalty records strictly after ``after``; raises rather than return part of one."""
        cfg, names = self.config, self.config.fields
        params: dict[str, Any] = {cfg.params.limit: cfg.page_size}
        skip_head = 0
        if cfg.pagination == "cursor":
            if after.token:
                params[cfg.params.cursor] = after.token
        elif cfg.pagination == "offset":
            params[cfg.params.offset] = after.position
        else:
            params[cfg.params.page] = after.position // cfg.page_size + 1
            skip_head = after.position % cfg.page_size  # the consumed head of a partial page
        response = self._exchange("GET", cfg.pull_path, "fetch", params=params)
        try:
            envelope, items = split_items(body_text(response), names.items)
        except (JsonShapeError, ValueError) as exc:
            raise FatalError(f"agency {self.code}: fetch: unusable answer: {exc}") from exc
        if names.sequence is None:
            kept = items[skip_head:]
            position = after.position + len(kept)
        else:
            kept, position = self._after_sequence(items, after.position)
        records = [
            InboundRecord(native=value, raw=raw, ref=_ref(value, self._record_id)) for raw, value in kept
        ]
        return Page(records=records, next_cursor=self._next_cursor(envelope, after, position),
                    more=self._more(envelope, items, position))  # fmt: skip

    def _after_sequence(self, items: list[tuple[str, Any]], position: int) -> tuple[list[tuple[str, Any]], int]:
        kept = []
        for raw, value in items:
            try:
                seq = int(value[self.config.fields.sequence])
            except (KeyError, TypeError, ValueError) as exc:
                raise FatalError(f"agency {self.code}: fetch: a record has no sequence number: {raw[:120]}") from exc
            if seq <= position:
                continue  # already consumed: the agency served part of a page again
            if seq != position + 1:
                raise FatalError(f"agency {self.code}: fetch: sequence jumps from {position} to {seq}")
            kept.append((raw, value))
            position = seq
        return kept, position

    def _next_cursor(self, envelope: dict[str, Any], after: Cursor, position: int) -> Cursor:
        if self.config.pagination != "cursor":
            return Cursor(position=position)
        token = dotted_get(envelope, self.config.fields.next_cursor)
        if token is not None and len(str(token)) > CURSOR_TOKEN_MAX:
            # stored with the page, it would fail the page's commit at every retry
            raise FatalError(f"agency {self.code}: fetch: its next cursor is {len(str(token))} characters long; "
                             f"the hub keeps {CURSOR_TOKEN_MAX}")  # fmt: skip
        # An agency with nothing new may answer without a token: keep ours to resume from.
        return Cursor(position=position, token=str(token) if token not in (None, "") else after.token)

    def _more(self, envelope: dict[str, Any], items: list, position: int) -> bool:
        names = self.config.fields
        if names.has_more and isinstance(dotted_get(envelope, names.has_more), bool):
            return bool(dotted_get(envelope, names.has_more))
        total = dotted_get(envelope, names.total) if names.total else None
        if isinstance(total, int):
            return position < total
        return len(items) >= self.config.page_size

    def acknowledge(self, page: Page) -> None:
        """Nothing to do: a REST pull is acknowledged by asking for what follows it."""

    # --- probe / close -----------------------------------------------------------------
    def probe(self) -> Health:
        """Hit the agency's cheap endpoint (or pull one record) and report how it went."""
        started = time.perf_counter()
        try:
            if self.config.probe_path:
                self._exchange("GET", self.config.probe_path, "probe")
            else:
                self._exchange("GET", self.config.pull_path, "probe", params={self.config.params.limit: 1})
        except HubError as exc:
            return Health(ok=False, detail=f"{type(exc).__name__}: {exc}", latency_ms=_ms(started))
        return Health(ok=True, detail="ok", latency_ms=_ms(started))

    def close(self) -> None:
        self._session.close()


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        raise ValueError(f"expected text, got {value!r}")
    return str(value)


def _ref(value: dict[str, Any], field: str | None) -> str | None:
    if not field or value.get(field) in (None, ""):
        return None
    return str(value[field])


def _batch_key(messages: Sequence[OutboundMessage]) -> str:
    # the same batch resent carries the same key; each message also carries its own id
    return hashlib.sha256("\n".join(m.message_id for m in messages).encode()).hexdigest()[:32]


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def from_spec(spec: AgencySpec, context: AdapterContext) -> RestAdapter:
    """Build the adapter from the agency's data file and what the hub resolved for it.

    ``spec.endpoint`` is the base URL, ``spec.transport`` (the ``[rest]`` table) the rest of
    the config; ``context`` brings the bearer token, TLS file paths and timeouts.
    """
    data = dict(spec.transport)
    if "token" in data:
        raise ConfigurationError(f"agency {spec.code}: [rest] must not hold the token; use credentials = 'env:…'")
    data["base_url"] = spec.endpoint
    # an agency file may ask for its own timeouts (a slow agency); otherwise the hub's apply
    data.setdefault("connect_timeout", context.connect_timeout)
    data.setdefault("read_timeout", context.read_timeout)
    if data.get("auth") == "bearer":
        data["token"] = context.secret
        if context.secret and not _HEADER_SAFE.fullmatch(context.secret):
            # checked here, named but never quoted: requests' own error would print the header
            # with the token in it, into the sync's output and the worker's log
            raise ConfigurationError(f"agency {spec.code}: its token (credentials {spec.credentials}) holds a space, "
                                     "a line break or a character outside ASCII: an HTTP header cannot carry it")  # fmt: skip
    tls = context.tls
    for key, path in (("ca_file", tls.ca), ("client_cert", tls.client_cert), ("client_key", tls.client_key)):
        if path is not None:
            data[key] = str(path)
    try:
        config = RestConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"agency {spec.code}: [rest] {describe_errors(exc, root='rest')}") from exc
    return RestAdapter(config, code=spec.code, record_id_field=spec.violation_mapping.record_id)
