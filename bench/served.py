"""Sandbox agencies served by a process of their own, as a real agency is another machine.

Served from threads of the measuring process, the sandbox's parsing, rendering and JSON work took
the same interpreter lock as the side being measured: a pull or push measured the sandbox about as
much as the hub, and the hub could not overlap its own work with the agency's (its caches also
counted as the measured side's memory).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["served"]


def _serve(start: Callable[..., tuple[Any, Any]], args: tuple, conn, stop) -> None:
    running, described = start(*args)
    try:
        conn.send(described)
        stop.wait()
    finally:
        running.stop()


@contextlib.contextmanager
def served(start: Callable[..., tuple[Any, Any]], *args: Any) -> Iterator[Any]:
    """What ``start(*args)`` describes of the sandbox it starts, in a spawned process, until the block ends.

    ``start`` is a module-level function (it is pickled) returning the running sandbox (anything
    with ``stop()``) and a picklable description of it for the caller: endpoints, credentials.
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    stop = context.Event()
    server = context.Process(target=_serve, args=(start, args, theirs, stop), daemon=True)
    server.start()
    theirs.close()  # so that a server dying before it answers ends recv() with EOFError, not a hang
    try:
        try:
            described = ours.recv()
        except EOFError:
            raise RuntimeError(f"the sandbox process ({start.__name__}) died while starting: see its traceback above") from None
        yield described
    finally:
        stop.set()
        server.join(10)
