"""Timing, percentiles and peak memory, the same way for the hub and for every baseline."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import timeit
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Measurement", "machine_pace_us", "percentile", "peak_rss_mb", "reset_peak_rss", "run_child", "timed"]


@dataclass
class Measurement:
    """One side of one comparison (the hub, or its baseline)."""

    name: str
    records: int = 0
    seconds: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_mb: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        return self.records / self.seconds if self.seconds > 0 and self.records else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["records_per_s"] = None if self.rate is None else round(self.rate, 1)
        return out


def percentile(samples: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of the samples, in their unit."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


class timed:
    """``with timed() as t: ...`` then ``t.seconds``; ``peak_rss_mb()`` after the block is the block's own peak.

    Sides of one scenario run in one process, one after another: without the reset, the hub's
    peak after the raw load was the million tuples the raw load had held (2.7 GiB on the drop).
    """

    def __enter__(self) -> "timed":
        reset_peak_rss()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def machine_pace_us() -> float:
    """Microseconds this interpreter takes to sum 1,000 integers, the best of five rounds.

    The benchmark VM has phases: in a slow one the same code runs two to three times as long,
    the hub's pure-Python checks more so than some baselines (bench/analysis.md, fourteenth
    round). A run records this at its start and end, so its report says which phase it met.
    On this VM: about 4 µs in a fast phase, 6-9 µs in a slow one.
    """
    rounds = timeit.repeat("sum(numbers)", setup="numbers = list(range(1000))", number=20_000, repeat=5)
    return min(rounds) / 20_000 * 1e6


def reset_peak_rss() -> None:
    """Set this process's peak resident set size to its current one (Linux 4.0+; elsewhere a no-op).

    What an earlier measurement held and has freed no longer counts as the next one's peak.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB, since the last reset_peak_rss() if any.

    VmHWM belongs to the address space, which exec replaces; ru_maxrss would also count the
    parent's memory when the child was forked from a large process.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_child(module: str, args: list[str], *, timeout: float = 3600) -> dict[str, Any]:
    """Run ``python -m module args`` in a fresh interpreter; it prints one JSON object last."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                          env=env, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
