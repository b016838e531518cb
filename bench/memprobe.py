"""Scenario 5's child process: one REST pull of N records into a fresh SQLite file; prints its peak RSS.

Run in a fresh interpreter (``python -m bench.memprobe N DIR``) so the peak belongs to this pull alone.
The sandbox agency serving the records runs in a process of its own: in this one, its caches of
rendered drafts grew with N and were counted as the hub's memory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.measure import peak_rss_mb
from bench.pull import hub_pull, served_pull_agency


def main() -> None:
    count, work = int(sys.argv[1]), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    with served_pull_agency(count) as agency:
        m = hub_pull(f"sqlite:///{work / f'mem-{count}.sqlite3'}", agency, work)
    print(json.dumps({"records": m.records, "seconds": m.seconds, "peak_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
