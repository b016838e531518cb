"""Receipts of licence batches in shapes an agency's exporter may really write: read as they plainly
say, or refused as a FatalError naming the batch. Never a crash, never a receipt the outbox cannot
store (that failed the commit of the window's receipts at every retry, deliveries stuck in sending).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path

import pytest

from adapters import AdapterContext, build_adapter
from adapters.base import OutboundMessage
from contracts.registry import load_registry
from hub.errors import FatalError
from sandbox.core import AgencyBook, Fault
from sandbox.filedrop_agencies import DIALECTS, start_filedrop_agency

FAST = {"receipt_timeout": 5, "poll_interval": 0.02, "incomplete_grace": 3600, "claim_stale_after": 3600}
MESSAGES = [OutboundMessage(f"shape-{n}", f"津南审批许字〔2026〕S{n:04d}号", {"许可内容": f"内容{n}"}) for n in (1, 2)]


def _ack(message: OutboundMessage, n: int, **changes) -> dict:
    return {"message_id": message.message_id, "ack_id": f"GHFJ-ACK-{n}", "digest": message.digest,
            "duplicate": False, "received_at": "2026-11-29T16:05:00+08:00", **changes}  # fmt: skip


def _delivered_with(tmp_path: Path, receipt_of) -> list:
    """Deliver MESSAGES to the sandbox 规划分局 (a directory drop), which takes the batch and lets
    ``receipt_of(batch_id)`` answer in its place."""
    d = DIALECTS["GHFJ"]
    running = start_filedrop_agency("GHFJ", root=tmp_path / "share", key_dir=tmp_path / "keys",
                                    book=AgencyBook(code="GHFJ", name=d.name, uscc=d.uscc, malformed_every=0))  # fmt: skip
    running.book.inject(Fault.TIMEOUT)

    def answer() -> None:
        archive = running.root / "agency_archive"
        while not any(archive.iterdir()):
            time.sleep(0.02)
        (batch,) = archive.iterdir()
        batch_id = json.loads((batch / "manifest.json").read_bytes())["batch_id"]
        body = {"batch_id": batch_id, "status": "accepted", **receipt_of(batch_id)}
        (running.root / "receipts" / f"{batch_id}.json").write_text(json.dumps(body), "utf-8")

    spec = load_registry(overrides={"GHFJ": running.transport_overrides({**load_registry()["GHFJ"].transport,
                                                                         **FAST})})["GHFJ"]  # fmt: skip
    agency = threading.Thread(target=answer, daemon=True)
    agency.start()
    adapter = build_adapter(spec, AdapterContext(work_dir=tmp_path / "work"))
    try:
        return adapter.deliver(MESSAGES)
    finally:
        adapter.close()
        agency.join(timeout=10)
        running.stop()


def test_a_time_of_receipt_without_an_offset_is_read_as_utc(tmp_path):
    receipts = _delivered_with(tmp_path, lambda _: {"acks": [
        _ack(MESSAGES[0], 1, received_at="2026-11-29T08:05:00"), _ack(MESSAGES[1], 2)]})

    assert [r.received_at for r in receipts] == [dt.datetime(2026, 11, 29, 8, 5, tzinfo=dt.UTC)] * 2


@pytest.mark.parametrize(("receipt", "words"), [
    ({"acks": "all of them"}, "'acks' and 'errors' must be lists of objects"),
    ({"acks": [], "errors": ["shape-1 refused"]}, "'acks' and 'errors' must be lists of objects"),
    ({"acks": [_ack(MESSAGES[0], 1, ack_id="A" * 201), _ack(MESSAGES[1], 2)]}, "longer than 200 characters"),
])  # fmt: skip
def test_a_receipt_of_a_shape_the_hub_cannot_use_is_refused_naming_the_batch(tmp_path, receipt, words):
    with pytest.raises(FatalError, match="batch HUB-GHFJ-") as refused:
        _delivered_with(tmp_path, lambda _: receipt)
    assert words in str(refused.value)
