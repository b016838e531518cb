"""Scenario 5's child process: one REST pull of N records into a fresh SQLite file; prints its peak RSS.

Run in a fresh interpreter (``python -m bench.memprobe N DIR``) so the peak belongs to this pull alone.
The sandbox agency serving the records runs in a process of its own: in this one, its caches of
rendered drafts grew with N and were counted as the hub's memory.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
from pathlib import Path
from types import SimpleNamespace

from bench.measure import peak_rss_mb
from bench.pull import hub_pull, start_pull_agency


def _serve(count: int, conn, stop) -> None:
    agency = start_pull_agency(count)
    conn.send((agency.endpoint, agency.token))
    stop.wait()
    agency.stop()


def main() -> None:
    count, work = int(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    stop = context.Event()
    server = context.Process(target=_serve, args=(count, theirs, stop), daemon=True)
    server.start()
    try:
        endpoint, token = ours.recv()
        agency = SimpleNamespace(endpoint=endpoint, token=token)  # what hub_pull reads of a running agency
        m = hub_pull(f"sqlite:///{work / f'mem-{count}.sqlite3'}", agency, work)
    finally:
        stop.set()
        server.join(10)
    print(json.dumps({"records": m.records, "seconds": m.seconds, "peak_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
