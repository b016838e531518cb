"""Pausing the cyclic garbage collector while a batch of records is built and stored.

A page of a pull holds tens of thousands of container objects (each record's native dict, its
canonical record, its payload, its rows) alive for a fraction of a second. Their allocation
set off the collector's full pass about once a page; each walked them and every object the
process has loaded, and freed next to nothing: a sixth of a file-drop ingest's time. A page's
objects are freed by reference counting once it is stored; the little cyclic garbage it leaves
is collected when the collector resumes.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["cyclic_gc_paused"]


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Automatic cyclic collection off inside, back on after unless it was off before we came.

    Process-wide: pauses that overlap in threads at worst leave the collector on a little early.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
