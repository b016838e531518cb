"""What every simulated agency shares: its book of received licences and of penalties, and its faults.

A simulated agency is an independent system: it knows nothing of the hub's contracts or
mappings. It keeps the licences it received (keyed by message id, so a resend is seen as
one delivery), invents penalty records for the companies it licensed — deterministically
from a seed, a few of them malformed the way real agency data is — and can be told to
misbehave. Protocol front-ends (REST, SOAP, file drop) render the book in their dialect.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import threading
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from http.server import ThreadingHTTPServer
from typing import Any

__all__ = [
    "AgencyBook",
    "Ack",
    "Fault",
    "LoopbackHTTPServer",
    "Malformation",
    "PenaltyDraft",
    "ReplayConflict",
    "digest_of",
]

PENALTY_WORDS = ["警告", "通报批评", "罚款", "没收违法所得", "暂扣许可证件", "吊销许可证件", "责令停产停业"]


def digest_of(payload: dict[str, Any]) -> str:
    """SHA-256 of canonical JSON (sorted keys, compact, UTF-8): the digest an agency puts in its receipt."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Fault(StrEnum):
    TIMEOUT = "timeout"  # hold the request past any sane read timeout
    ERROR_500 = "500"
    RATE_LIMIT = "429"  # with Retry-After
    DROP = "drop"  # close the connection without a response
    REPEAT = "repeat"  # serve the previous page's records again
    HALF_WRITTEN = "half_written"  # file drops: leave a data file without its manifest


class Malformation(StrEnum):
    BAD_USCC = "bad_uscc"
    MISSING_DECISION_NO = "missing_decision_no"
    BAD_DATE = "bad_date"
    WRONG_UNIT = "wrong_unit"


class ReplayConflict(Exception):
    """A message id seen before arrived with a different payload."""


@dataclass(frozen=True)
class Ack:
    ack_id: str
    received_at: dt.datetime
    digest: str
    duplicate: bool


@dataclass
class Received:
    payload: dict[str, Any]
    ack: Ack
    times_seen: int = 1


@dataclass
class PenaltyDraft:
    """A penalty in the agency's own terms, before a front-end renders it in its dialect."""

    seq: int
    record_id: str
    subject_name: str
    uscc: str
    decision_no: str
    violation_type: str
    facts: str
    legal_basis: str
    penalties: list[str]
    content: str
    fine_wanyuan: Decimal | None
    decision_date: str  # ISO date; a malformed one is kept as text on purpose
    validity_end: str
    malformation: Malformation | None = None

    def amount_text(self, unit: str) -> str | None:
        """The fine as this agency writes it: 'yuan' or 'wanyuan'; a wrong-unit record says 元/万元 wrongly."""
        if self.fine_wanyuan is None:
            return None
        if self.malformation == Malformation.WRONG_UNIT:
            other = self.fine_wanyuan * 10000 if unit == "wanyuan" else self.fine_wanyuan
            return f"{other.normalize():f}元" if unit == "wanyuan" else f"{other.normalize():f}万元"
        value = self.fine_wanyuan * 10000 if unit == "yuan" else self.fine_wanyuan
        return f"{value.normalize():f}"


@dataclass
class AgencyBook:
    """The state of one simulated agency. Thread-safe: front-ends serve requests concurrently.

    Args:
        code: the agency's code, used in its record ids.
        name: its Chinese name, written into penalty records as the penalising authority.
        uscc: its own USCC.
        seed: makes the invented penalties the same on every run.
        subject_fields: the names under which this agency's licence payloads carry the company
            name and USCC (each agency has its own dialect).
        clean_companies: USCCs that never get a penalty (for demos).
        malformed_every: every n-th invented penalty is malformed (0: never).
    """

    code: str
    name: str
    uscc: str
    seed: int = 7
    subject_fields: tuple[str, str] = ("name", "uscc")
    clean_companies: frozenset[str] = frozenset()
    malformed_every: int = 7
    penalties_per_company: tuple[int, ...] = (1, 2, 2, 3)
    abbreviation: str = ""  # as in its decision numbers, e.g. 市监 in 津南市监罚〔2026〕12号
    received: dict[str, Received] = field(default_factory=dict)
    penalties: list[PenaltyDraft] = field(default_factory=list)
    faults: deque = field(default_factory=deque)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    # companies that already have penalties: looked up on every licence received, so a set, built
    # from ``penalties`` on first use (a scan per licence made a 100,000-grant push quadratic)
    _penalised: set[str] | None = field(default=None, repr=False)
    _acks: int = 0

    # --- licences in -------------------------------------------------------------------
    def receive(self, message_id: str, payload: dict[str, Any]) -> Ack:
        """Record one licence message; a resend of the same id gets the same ack, marked duplicate."""
        digest = digest_of(payload)
        with self._lock:
            known = self.received.get(message_id)
            if known:
                if known.ack.digest != digest:
                    raise ReplayConflict(f"message {message_id} was received before with a different payload")
                known.times_seen += 1
                return Ack(known.ack.ack_id, known.ack.received_at, digest, duplicate=True)
            self._acks += 1
            ack = Ack(f"{self.code}-ACK-{self._acks:08d}", dt.datetime.now(dt.UTC), digest, duplicate=False)
            self.received[message_id] = Received(payload=dict(payload), ack=ack)
            name_field, uscc_field = self.subject_fields
            self._invent_penalties(str(payload.get(name_field, "")), str(payload.get(uscc_field, "")))
            return ack

    def licences(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.payload for r in self.received.values()]

    # --- penalties out -----------------------------------------------------------------
    def penalties_after(self, seq: int, limit: int) -> list[PenaltyDraft]:
        with self._lock:
            # seq numbers are 1-based and dense, so slicing is exact
            return self.penalties[seq : seq + limit]

    def add_penalty(self, **fields: Any) -> PenaltyDraft:
        """Append a scripted penalty (tests and demos); unspecified fields get plausible values."""
        with self._lock:
            draft = self._draft(random.Random(len(self.penalties)), fields.pop("subject_name", "某公司"),
                                fields.pop("uscc", ""), None)
            for key, value in fields.items():
                setattr(draft, key, value)
            self.penalties.append(draft)
            self._penalised_set().add(draft.uscc)
            return draft

    def _penalised_set(self) -> set[str]:
        if self._penalised is None:
            self._penalised = {p.uscc for p in self.penalties}
        return self._penalised

    def _invent_penalties(self, company: str, uscc: str) -> None:
        # The placeholder code names no one: such records would need the registration number too.
        placeholder = uscc == "00000000000000000X"
        if not uscc or placeholder or uscc in self.clean_companies or uscc in self._penalised_set():
            return
        self._penalised_set().add(uscc)
        rng = random.Random(f"{self.seed}:{self.code}:{uscc}")
        for _ in range(rng.choice(self.penalties_per_company)):
            malformed = None
            if self.malformed_every and (len(self.penalties) + 1) % self.malformed_every == 0:
                # each agency starts at a different kind, so a handful of agencies show every kind
                offset = sum(map(ord, self.code))
                malformed = list(Malformation)[(len(self.penalties) // self.malformed_every + offset) % len(Malformation)]
            self.penalties.append(self._draft(rng, company, uscc, malformed))

    def _draft(self, rng: random.Random, company: str, uscc: str, malformed: Malformation | None) -> PenaltyDraft:
        seq = len(self.penalties) + 1
        penalties = sorted(set(rng.sample(PENALTY_WORDS[:5], rng.choice((1, 1, 2)))), key=PENALTY_WORDS.index)
        if malformed == Malformation.WRONG_UNIT and "罚款" not in penalties:
            penalties.append("罚款")
        fine = Decimal(rng.choice((2000, 5000, 10000, 30000, 200000))) / 10000 if "罚款" in penalties else None
        # recent enough that even a minor penalty is still inside its 3-month publication window
        decided = dt.date.today() - dt.timedelta(days=rng.randrange(3, 80))
        draft = PenaltyDraft(
            seq=seq,
            record_id=f"{self.code}-CF-{seq:07d}",
            subject_name=company,
            uscc=uscc,
            decision_no=f"津南{self.abbreviation or self.code}罚〔{decided.year}〕{seq:04d}号",
            violation_type=rng.choice(["未按规定公示年度报告", "消防设施未保持完好有效", "未按期申报纳税", "违规停放车辆"]),
            facts="经查，当事人存在上述违法行为，事实清楚，证据确凿。",
            legal_basis="《中华人民共和国行政处罚法》第二十八条",
            penalties=penalties,
            content="、".join(penalties),
            fine_wanyuan=fine,
            decision_date=decided.isoformat(),
            validity_end=(decided + dt.timedelta(days=365)).isoformat(),
            malformation=malformed,
        )
        if malformed == Malformation.BAD_USCC and uscc:
            draft.uscc = uscc[:-1] + ("1" if uscc[-1] != "1" else "2")
        elif malformed == Malformation.MISSING_DECISION_NO:
            draft.decision_no = ""
        elif malformed == Malformation.BAD_DATE:
            draft.decision_date = "2026-13-45"
        elif malformed == Malformation.WRONG_UNIT and draft.fine_wanyuan is None:
            draft.fine_wanyuan = Decimal("0.2")
        return draft

    # --- faults ------------------------------------------------------------------------
    def inject(self, fault: Fault, times: int = 1) -> None:
        with self._lock:
            self.faults.extend([fault] * times)

    def next_fault(self) -> Fault | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None


class LoopbackHTTPServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 (ephemeral port by default) served from a daemon thread."""

    daemon_threads = True
    allow_reuse_address = True
    poll_interval = 0.05  # seconds; short, so stop() returns promptly (tests start and stop many servers)

    def __init__(self, handler, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "LoopbackHTTPServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": self.poll_interval},
                                        name=f"sandbox-{self.url}", daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
