"""`hub serve` logs through a queue: a stalled log stream holds up no caller, and no line is lost or changed."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading

from hub.logqueue import queued_logging
from tests.helpers import REPO

log = logging.getLogger("hub.test.logqueue")


class StalledStream(io.StringIO):
    """A stream whose writes wait until released, like stderr into a pipe nobody reads."""

    def __init__(self) -> None:
        super().__init__()
        self.released, self.entered = threading.Event(), threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        if not self.released.wait(5):
            self.released.set()  # stuck that long: some caller waits on the write; let the test fail, not hang
        return super().write(text)


def _messages(stream: io.StringIO) -> list[str]:
    return [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]


def test_a_stalled_stream_holds_up_no_caller_and_every_line_is_written_by_the_end():
    stream = StalledStream()
    with queued_logging("INFO", stream=stream):
        for n in range(200):
            log.info("request %d", n)
        assert stream.getvalue() == ""  # every call returned while the stream was stuck
        stream.released.set()
    assert _messages(stream) == [f"request {n}" for n in range(200)]


def test_the_level_holds_and_a_line_shows_its_arguments_as_they_were_when_logged():
    stream = StalledStream()
    root_level = logging.getLogger().level
    items = ["as logged"]
    with queued_logging("INFO", stream=stream):
        log.info("first")  # the writer is stuck on this line's write until the end
        log.debug("below the level")
        log.info("items %s", items)
        items[0] = "changed afterwards"
        log.warning("a warning")
        stream.released.set()
    assert _messages(stream) == ["first", "items ['as logged']", "a warning"]
    assert " INFO hub.test.logqueue: " in stream.getvalue()
    assert logging.getLogger().level == root_level


def test_a_stream_blocked_for_good_costs_bounded_memory_and_the_lines_dropped_are_counted_in_their_place():
    stream = StalledStream()
    with queued_logging("INFO", stream=stream, capacity=20):
        log.info("first")
        assert stream.entered.wait(5)  # the writer holds "first" and waits on the stream: the queue is empty
        for n in range(200):
            log.info("request %d", n)  # returns at once even with the queue full
        stream.released.set()
    assert _messages(stream) == ["first", *(f"request {n}" for n in range(20)),
                                 "180 log line(s) dropped here: the log stream was blocked with 20 lines waiting"]


def test_the_count_of_dropped_lines_goes_in_their_place_once_there_is_room():
    stream = StalledStream()
    with queued_logging("INFO", stream=stream, capacity=5):
        log.info("first")
        assert stream.entered.wait(5)
        for n in range(50):
            log.info("stalled %d", n)
        stream.released.set()
        for _ in range(500):  # until the writer has written all it held: the queue is empty again
            if len(stream.getvalue().splitlines()) == 6:
                break
            threading.Event().wait(0.01)
        log.info("after")
    assert _messages(stream) == ["first", *(f"stalled {n}" for n in range(5)),
                                 "45 log line(s) dropped here: the log stream was blocked with 5 lines waiting", "after"]


STUCK_FOR_GOOD = """
import io, logging, threading
from hub.logqueue import queued_logging
from tests.helpers import REPO

class DeadPipe(io.StringIO):  # a log pipe nobody will ever read again
    def write(self, text):
        threading.Event().wait()

with queued_logging("INFO", stream=DeadPipe(), capacity=5, shutdown_seconds=0.5):
    for n in range(50):
        logging.getLogger("hub.test").info("request %d", n)
print("block left")
"""


def test_a_stream_stuck_for_good_holds_up_neither_the_block_nor_the_process_exit():
    """logging.shutdown() at exit takes every handler's lock: the stuck writer's thread holds its own."""
    proc = subprocess.run([sys.executable, "-c", STUCK_FOR_GOOD], cwd=REPO, capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert (proc.returncode, proc.stdout.strip()) == (0, "block left"), proc.stderr
