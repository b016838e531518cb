"""A server's log lines, written by a thread of their own so that no request waits on a write.

`hub serve` logs a line per request (hub.api.middleware.RequestLog). Formatted and written on the
event loop, that line cost a history request 0.2 ms over HTTP on the benchmark machine
(bench/analysis.md, thirteenth round). Here the loop only makes the record and puts it on a
queue; a listener thread formats and writes it. A stalled stderr (a log shipper restarting,
a full pipe) then holds up the listener, not the requests.
"""

from __future__ import annotations

import logging
import queue
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

__all__ = ["LOG_FORMAT", "queued_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@contextmanager
def queued_logging(level: str, *, stream: TextIO | None = None) -> Iterator[None]:
    """The root logger at ``level``, writing to ``stream`` (stderr) through a queue, while the block runs.

    Every line put on the queue is written before the block's exit returns. Records are
    formatted (their arguments merged, a traceback rendered) before they are queued, so a
    record never reaches the listener holding objects the caller goes on to change.
    """
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(logging.Formatter(LOG_FORMAT))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    enqueue = QueueHandler(records)
    listener = QueueListener(records, writer)
    root = logging.getLogger()
    previous_level = root.level
    root.setLevel(level)
    root.addHandler(enqueue)
    listener.start()
    try:
        yield
    finally:
        root.removeHandler(enqueue)
        root.setLevel(previous_level)
        listener.stop()  # drains the queue: nothing logged is lost at shutdown
