"""A server's log lines, written by a thread of their own so that no request waits on a write.

`hub serve` logs a line per request (hub.api.middleware.RequestLog). Formatted and written on the
event loop, that line cost a history request 0.2 ms over HTTP on the benchmark machine
(bench/analysis.md, thirteenth round). Here the loop only makes the record and puts it on a
queue; a listener thread formats and writes it. A stalled stderr (a log shipper restarting,
a full pipe) then holds up the listener, not the requests.

The queue is bounded: stderr blocked for good must not grow the server until it is killed for
its memory. Lines that find the queue full are counted and dropped, and the count is written,
as a warning in its place among the lines, once there is room again. Nothing of the record a
reviewer's lookup leaves is in these lines alone: the audit log, in the database, has it.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

__all__ = ["LOG_FORMAT", "QUEUED_LINES", "queued_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUEUED_LINES = 10_000  # a queued request line holds ~0.6 KiB: a stalled stderr keeps ~6 MiB waiting
_LOGGER = "hub.logqueue"


def _dropped_notice(count: int, capacity: int) -> logging.LogRecord:
    return logging.makeLogRecord({
        "name": _LOGGER, "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": f"{count} log line(s) dropped here: the log stream was blocked with {capacity} lines waiting",
    })  # fmt: skip


class _DroppingQueueHandler(QueueHandler):
    """Queue a record if there is room; count it if not, and queue the count before the next one that fits."""

    def __init__(self, records: queue.Queue) -> None:
        super().__init__(records)
        self._dropped, self._counting = 0, threading.Lock()  # log calls come from the loop and worker threads

    def enqueue(self, record: logging.LogRecord) -> None:
        with self._counting:
            try:
                if self._dropped:
                    self.queue.put_nowait(_dropped_notice(self._dropped, self.queue.maxsize))
                    self._dropped = 0
                self.queue.put_nowait(record)
            except queue.Full:
                self._dropped += 1

    def take_dropped(self) -> int:
        with self._counting:
            count, self._dropped = self._dropped, 0
            return count


class _Writer(logging.StreamHandler):
    """The listener's handler, which can be abandoned: its thread may be stuck in a write that
    never returns, holding the handler's lock, and logging.shutdown() at interpreter exit takes
    that lock (and flushes the stream) for every handler there is."""

    abandoned = False

    def acquire(self) -> None:
        if not self.abandoned:
            super().acquire()

    def release(self) -> None:
        if not self.abandoned:
            super().release()

    def flush(self) -> None:
        if not self.abandoned:
            super().flush()


class _Listener(QueueListener):
    def stop_within(self, seconds: float) -> bool:
        """stop(), which drains the queue, unless the stream takes no line for ``seconds`` in all:
        then give up (False), leaving the daemon thread and its lines, so that a log pipe nobody
        reads can hold up the process's exit no more than it holds up a request."""
        deadline = time.monotonic() + seconds
        try:
            self.queue.put(self._sentinel, timeout=seconds)  # waits for room, as the base class does not
        except queue.Full:
            return False
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()


@contextmanager
def queued_logging(level: str, *, stream: TextIO | None = None, capacity: int = QUEUED_LINES,
                   shutdown_seconds: float = 10.0) -> Iterator[None]:  # fmt: skip
    """The root logger at ``level``, writing to ``stream`` (stderr) through a queue, while the block runs.

    Every line queued is written before the block's exit returns, and so is the count of lines
    dropped while ``capacity`` lines waited, unless the stream takes nothing for
    ``shutdown_seconds``: the exit then returns without them, and the process can still exit.
    Records are formatted (their arguments merged, a traceback rendered) before they are queued,
    so a record never reaches the listener holding objects the caller goes on to change.
    """
    writer = _Writer(stream or sys.stderr)
    writer.setFormatter(logging.Formatter(LOG_FORMAT))
    records: queue.Queue[logging.LogRecord] = queue.Queue(capacity)
    enqueue = _DroppingQueueHandler(records)
    listener = _Listener(records, writer)
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
        drained = listener.stop_within(shutdown_seconds)  # nothing queued is lost, if the stream moves
        if not drained:
            writer.abandoned = True  # what it holds stays with its stuck thread; the exit goes on
        elif dropped := enqueue.take_dropped():
            writer.handle(_dropped_notice(dropped, capacity))
