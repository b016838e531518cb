"""CPU per pulled record on both sides of the connection: the puller's process and the PostgreSQL server.

``python -m bench.pgcost N [hub|dlt|bare]…`` (default: hub dlt) pulls N SCJG records from a sandbox agency (its own
process, as in scenario 1) into a fresh PostgreSQL database with each named side in turn, and
prints the microseconds of CPU per record of this process and of every ``postgres`` process of
the machine (backends, and what the server does for them meanwhile: WAL writing, checkpoints).
The server must run on this machine. Its backends' CPU is read once they have exited and the
postmaster has counted it (``/proc/PID/stat``: utime, stime, cutime, cstime). Each side's
setup (the migration, dlt's pipeline) is counted too: use N of 50,000 or more.

Scenario 1 compares records per second. On two cores the database server takes its CPU from
the same cores as the puller, so this says where a side's records per second went.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

__all__: list[str] = []


def postgres_cpu_seconds() -> float:
    """CPU used so far by every process named ``postgres`` and by the children they have reaped."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        name, fields = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if name == "postgres":
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def main(argv: list[str]) -> int:
    from bench.dbs import database
    from bench.pull import bare_pull, dlt_pull, hub_pull, served_pull_agency

    pulls = {"hub": hub_pull,
             "dlt": lambda url, agency, work: dlt_pull(url, agency, work / "dlt"),
             "bare": lambda url, agency, work: bare_pull(url, agency)}  # fmt: skip
    parser = argparse.ArgumentParser(prog="python -m bench.pgcost", description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, help="records to pull")
    parser.add_argument("sides", nargs="*", choices=sorted(pulls), default=["hub", "dlt"])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgcost-") as scratch, served_pull_agency(args.count) as agency:
        work = Path(scratch)
        for side in args.sides:
            with database("postgres", work, f"cost_{side}") as url:
                server, ours = postgres_cpu_seconds(), time.process_time()
                measured = pulls[side](url, agency, work)
                ours = time.process_time() - ours
                time.sleep(0.5)  # the backends have exited; let the postmaster reap them
                server = postgres_cpu_seconds() - server
            per = 1e6 / measured.records
            print(f"{side:>4}: {measured.records:,} records, {measured.records / measured.seconds:,.0f} rec/s; "
                  f"CPU per record: this process {ours * per:.0f} µs, PostgreSQL {server * per:.0f} µs", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
