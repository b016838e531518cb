"""The one narrow seam between the hub and an agency: deliver, fetch, acknowledge, probe.

An adapter speaks one protocol (REST, SOAP, file drop). It receives its typed config in
its constructor, never reads global settings, and translates every third-party error into
the hub's own exceptions (hub.errors) exactly once, with ``raise … from exc``.

Payloads crossing the seam are *native* flat dicts of strings: the contracts/ mapping has
already turned canonical records into the agency's field names (outbound), and turns the
agency's fields into canonical records after ``fetch`` (inbound).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import orjson

__all__ = [
    "item_fields",
    "AgencyAdapter",
    "Cursor",
    "Health",
    "InboundRecord",
    "OutboundMessage",
    "Page",
    "Receipt",
    "Rejected",
    "as_json_values",
    "canonical_json",
    "dotted_get",
    "json_text",
    "payload_digest",
]


def canonical_json(payload: Mapping[str, Any], *, default: Callable[[Any], Any] | None = None) -> str:
    """Keys sorted, no insignificant whitespace, UTF-8 without escaping: the text digests are taken of.

    Exactly what ``json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    default=default)`` gives, which is how an agency computes it.
    """
    fast = _orjson_where_json_agrees(payload, orjson.OPT_SORT_KEYS)
    return fast.decode("utf-8") if fast is not None else _json_canonical(payload, default)


def payload_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a native payload in canonical JSON.

    Agencies compute the same over what they received, so a receipt's digest proves
    the agency holds exactly what we sent, whatever the wire format was.
    """
    fast = _orjson_where_json_agrees(payload, orjson.OPT_SORT_KEYS)
    return hashlib.sha256(fast if fast is not None else _json_canonical(payload).encode("utf-8")).hexdigest()


def as_json_values(value: Any) -> Any:
    """``value`` as JSON gives it back: ``json.loads(json.dumps(value, ensure_ascii=False, default=str))``.

    What a log entry holds once stored; a copy, never ``value`` itself.
    """
    fast = _orjson_where_json_agrees(value)
    return orjson.loads(fast) if fast is not None else json.loads(json.dumps(value, ensure_ascii=False, default=str))


def json_text(value: Any) -> str:
    """JSON for ``value`` that reads back as ``json.dumps(value)`` does: orjson's compact UTF-8 where
    the two agree, json's text where they might not."""
    fast = _orjson_where_json_agrees(value)
    return fast.decode("utf-8") if fast is not None else json.dumps(value)


def _json_canonical(payload: Any, default: Callable[[Any], Any] | None = None) -> str:
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=default)


def _orjson_where_json_agrees(value: Any, option: int = 0) -> bytes | None:
    """``value`` written by orjson (compact, UTF-8), or None where json would write other text.

    orjson writes the same text as json for strings, integers, booleans, null, lists and objects
    with text keys, in a tenth of the time (a digest is taken per record pushed or pulled). It
    differs for some floats (1e-05 against 0.00001) and serialises what json refuses (datetimes,
    dataclasses): a value holding anything else goes to json.
    """
    if not _plain_json(value):
        return None
    try:
        return orjson.dumps(value, option=option)
    except orjson.JSONEncodeError:  # keys that are not text, integers past 64 bits, lone surrogates
        return None


_SCALARS = frozenset({str, int, bool, type(None)})  # exact types: subclasses (enums) go to json


def _plain_json(value: Any) -> bool:
    """Only dicts, lists and _SCALARS, however nested (orjson itself refuses keys that are not text)."""
    kind = type(value)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    else:
        return kind in _SCALARS
    kinds = set(map(type, items))  # a flat record of strings, the usual payload, costs one pass in C
    return kinds <= _SCALARS or all(_plain_json(item) for item in items if type(item) not in _SCALARS)


def dotted_get(tree: Any, path: str) -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``; None as soon as a step is missing or not a mapping."""
    for part in path.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


def item_fields(item: Any, paths: dict[str, str] | None = None) -> dict[str, Any]:
    """The native fields of a structured item (a SOAP item as a dict): each named path's value, or
    every leaf by its dotted path; values as text, as a JSON or CSV record would carry them.

    The one projection for a pull and for a quarantined item retried later (hub.quarantine), so
    that the retry maps exactly what the pull mapped.
    """
    return {name: _as_text(dotted_get(item, path)) for name, path in paths.items()} if paths else _leaves(item)


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(_leaves(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: _as_text(tree)}


def _as_text(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return [_as_text(v) for v in value]
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass(frozen=True)
class OutboundMessage:
    """One licence grant (or its later change) addressed to one agency."""

    message_id: str  # stable idempotency key: a resend after a crash carries the same id
    licence_key: str  # the decision document number, for humans and logs
    payload: dict[str, str]

    @property
    def digest(self) -> str:
        return payload_digest(self.payload)


ACK_ID_MAX = 200  # deliveries.ack_id


@dataclass(frozen=True)
class Receipt:
    """The agency's acknowledgement of one message."""

    message_id: str
    ack_id: str
    received_at: dt.datetime
    digest: str  # the agency's digest of what it received (see payload_digest)
    duplicate: bool = False  # the agency had seen this message id before
    # the agency's signature over the receipt that carried this ack (a compact JWS, verified by the
    # adapter), for agencies that sign them: what the hub keeps to prove the agency said so
    agency_signature: str | None = None

    def __post_init__(self) -> None:
        # what the outbox can store: a receipt it cannot would fail the commit of every receipt
        # of its window, at every retry, and leave the deliveries in *sending*
        if not self.ack_id or len(self.ack_id) > ACK_ID_MAX:
            raise ValueError(f"ack id {self.ack_id[:40]!r} is empty or longer than {ACK_ID_MAX} characters")
        if self.received_at.tzinfo is None:  # a time without an offset is read as UTC, by every adapter
            object.__setattr__(self, "received_at", self.received_at.replace(tzinfo=dt.UTC))


CURSOR_TOKEN_MAX = 2000  # sync_cursors.token


@dataclass(frozen=True, order=True)
class Cursor:
    """Where a pull stands. ``position`` only grows; ``token`` is the agency's opaque cursor, if any."""

    position: int = 0
    token: str | None = field(default=None, compare=False)

    def to_text(self) -> str:
        return json.dumps({"position": self.position, "token": self.token})

    @classmethod
    def from_text(cls, text: str | None) -> "Cursor":
        if not text:
            return cls()
        data = json.loads(text)
        return cls(position=int(data["position"]), token=data.get("token"))


@dataclass(frozen=True)
class InboundRecord:
    """One native record as the agency sent it, with the exact text kept for quarantine."""

    native: dict[str, Any]
    raw: str
    ref: str | None = None  # the agency's record id, when it could be read


@dataclass(frozen=True)
class Rejected:
    """A record or whole batch the adapter refused before mapping (bad manifest, hostile XML)."""

    ref: str
    reason: str
    raw: str | None = None


@dataclass(frozen=True)
class Page:
    """A slice of an agency's violation records, and the cursor that follows it."""

    records: list[InboundRecord]
    next_cursor: Cursor
    more: bool  # another fetch right away would return more
    batch_id: str | None = None  # file drops: the batch this page came from (loaded once, ever)
    rejected: list[Rejected] = field(default_factory=list)
    # file drops hand a big batch out in several pages, each committed on its own:
    batch_offset: int = 0  # records of the same batch in the pages before this one
    batch_complete: bool = True  # the batch ends here: only now is it loaded, and then acknowledged


@dataclass(frozen=True)
class Health:
    ok: bool
    detail: str
    latency_ms: float = 0.0


@runtime_checkable
class AgencyAdapter(Protocol):
    """What the hub needs from any agency, whatever protocol it speaks."""

    code: str
    #: True when fetch(after) depends on ``after`` alone, so the next page may be requested while
    #: this one is being stored; False when it needs the previous page acknowledged first.
    read_ahead: bool
    #: Seconds one deliver() may wait, by design, for an answer that comes later (a file drop's
    #: receipt); 0 where the answer is the request's own response, and a slow one a timeout.
    receipt_wait: float

    def deliver(self, messages: Sequence[OutboundMessage]) -> list[Receipt]:
        """Send a batch of messages; return one receipt per message, in the same order.

        Raises TransientError / FatalError / ConfigurationError for the whole batch.
        """

    def fetch(self, after: Cursor) -> Page:
        """Return the next page of violation records strictly after ``after``."""

    def acknowledge(self, page: Page) -> None:
        """Called after the hub committed ``page`` (file drops move the batch to processed/)."""

    def probe(self) -> Health:
        """A cheap liveness check of the agency endpoint."""

    def close(self) -> None:
        """Release connections and sessions."""
