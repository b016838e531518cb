"""docs/benchmarks.md and bench/results/latest.json from one run's rows."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_report(run: dict[str, Any], markdown: Path, json_file: Path, *, preface: str = "") -> None:
    """Write the JSON (everything) and the markdown table (one row per comparison)."""
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(run, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
    lines = [
        "# Benchmarks", "",
        f"Scale **{run['scale']}** ({run['sizes_note']}), run {run['started']} on {platform.node() or 'this machine'} "
        f"({run['machine']}). Absolute numbers are noisy on this shared 2-core machine; the ratios (hub ÷ baseline, "
        "measured in the same run) are the result. Regenerate with `make bench BENCH_ARGS='--scale small'`.", "",
        "| # | scenario | db | hub | baseline | hub rec/s | base rec/s | hub p50/p99 ms | base p50/p99 ms "
        "| hub peak MiB | ratio | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in run["rows"]:
        hub, base = row["hub"], row.get("baseline") or {}
        lat = lambda m: "–" if m.get("p50_ms") is None else f"{m['p50_ms']:.2f} / {m['p99_ms']:.2f}"  # noqa: E731
        met = {True: "yes", False: "**no**", None: "n/a"}[row.get("met")]
        lines.append(
            f"| {row['scenario']} | {row['title']} | {row.get('db', '')} | {hub['name']} ({_fmt(hub.get('records'))}) "
            f"| {base.get('name', '–')} | {_fmt(hub.get('records_per_s'))} | {_fmt(base.get('records_per_s'))} "
            f"| {lat(hub)} | {lat(base) if base else '–'} | {_fmt(hub.get('peak_mb'))} | {_fmt(row.get('ratio'), 2)} "
            f"| {row['target']} | {met} |"
        )
    if run.get("not_run"):
        lines += ["", "## Not run, and notes", ""] + [f"- {item}" for item in run["not_run"]]
    notes = [f"- {row['title']} ({row.get('db', '')}): {row['baseline']['note']}" for row in run["rows"]
             if row.get("baseline") and row["baseline"].get("note")]  # fmt: skip
    if notes:
        lines += ["", "## Baselines", ""] + sorted(set(notes))
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines) + "\n" + (("\n" + preface) if preface else ""), encoding="utf-8")
