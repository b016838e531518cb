"""docs/benchmarks.md and bench/results/latest.json from one run's rows.

Two hand-kept files join the generated tables: bench/verdict.md (where each target stands, and
what bounds it) right under them, and bench/analysis.md (every round's profiles, fixes, before
and after) at the end.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

__all__ = ["write_docs", "write_report"]

BENCH = Path(__file__).resolve().parent


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_report(run: dict[str, Any], markdown: Path, json_file: Path, *, verdict: str = "", preface: str = "") -> None:
    """Write the JSON (everything) and the markdown table (one row per comparison).

    ``verdict`` follows the tables, before the per-run notes; ``preface`` ends the file.
    """
    json_file.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(run, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
    lines = [
        "# Benchmarks", "",
        f"Scale **{run['scale']}** ({run['sizes_note']}), run {run['started']} on {platform.node() or 'this machine'} "
        f"({run['machine']}){_pace(run)}. Absolute numbers are noisy on this shared 2-core machine; the ratios (hub ÷ baseline, "
        "measured in the same run) are the result. Regenerate with "
        f"`make bench BENCH_ARGS='--scale {run['scale']}'`; several runs of one scale are combined with "
        "`python -m bench.report RUN.json…`.", "",
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
    lines += _every_run(run["rows"])
    if verdict:
        lines += ["", verdict.strip()]
    if run.get("not_run"):
        lines += ["", "## Not run, and notes", ""] + [f"- {item}" for item in run["not_run"]]
    notes = [f"- {row['title']} ({row.get('db', '')}): {row['baseline']['note']}" for row in run["rows"]
             if row.get("baseline") and row["baseline"].get("note")]  # fmt: skip
    if notes:
        lines += ["", "## Baselines", ""] + sorted(set(notes))
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text("\n".join(lines) + "\n" + (("\n" + preface) if preface else ""), encoding="utf-8")


def _pace(run: dict[str, Any]) -> str:
    """The machine's pace over a run (bench.measure.machine_pace_us), if the run recorded it."""
    pace = run.get("pace_us")
    if not pace or "start" not in pace or "end" not in pace:
        return ""
    return (f"; machine pace {pace['start']:.1f} µs at its start and {pace['end']:.1f} µs at its end "
            "(to sum 1,000 integers: ~4 in a fast phase, 6–9 in a slow one)")


def write_docs(run: dict[str, Any], out: Path | None = None) -> Path:
    """write_report with bench/'s hand-kept verdict and analysis, into docs/ and bench/results/ or ``out``.

    Returns:
        The markdown file written.
    """
    markdown = (out / "benchmarks.md") if out else BENCH.parent / "docs" / "benchmarks.md"
    json_file = (out / "latest.json") if out else BENCH / "results" / "latest.json"
    verdict, analysis = ((BENCH / name).read_text(encoding="utf-8") if (BENCH / name).exists() else ""
                         for name in ("verdict.md", "analysis.md"))  # fmt: skip
    write_report(run, markdown, json_file, verdict=verdict, preface=analysis)
    return markdown


def _every_run(rows: list[dict[str, Any]]) -> list[str]:
    """A table of the rows that several merged runs measured: how far one row moves between runs."""
    repeated = [row for row in rows if len(row.get("every_run") or []) > 1]
    if not repeated:
        return []
    lines = ["", "## Each row in every run that measured it", "",
             "The ratio of each run, oldest first; the table above shows the last. On this shared machine a row "
             "moves between runs, and a target is met only where the row meets it in every run.", "",
             "| # | scenario | db | ratio in each run | lowest – highest | target met |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in repeated:
        ratios = [seen["ratio"] for seen in row["every_run"] if seen["ratio"] is not None]
        spread = f"{min(ratios):.2f} – {max(ratios):.2f}" if ratios else "–"
        met = [seen["met"] for seen in row["every_run"]]
        verdict = "n/a" if row.get("met") is None else f"{sum(m is True for m in met)} of {len(met)} runs"
        lines.append(f"| {row['scenario']} | {row['title']} | {row.get('db', '')} "
                     f"| {', '.join(_fmt(r, 2) for r in ratios)} | {spread} | {verdict} |")  # fmt: skip
    return lines


def _row_key(row: dict[str, Any]) -> tuple:
    """What makes two runs' rows the same row: scenario, title and database."""
    return row["scenario"], row["title"], row.get("db")


def merge_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs of the same scale (scenarios run one after another, each with
    its baseline in the same run): rows in scenario order, each run's start time in the notes.

    A row of a later run replaces an earlier run's row of the same scenario, title and database:
    a re-run supersedes what it measured again, and the notes say which run each row came from.
    Each row keeps every run's ratio and verdict (``every_run``), which the report tabulates.
    """
    scales = {run["scale"] for run in runs}
    if len(scales) != 1:
        raise ValueError(f"runs of different scales cannot share one table: {sorted(scales)}")
    merged = {**runs[0], "rows": [], "not_run": [], "pace_us": None}  # each run's pace is in its note
    merged["started"] = ", ".join(run["started"] for run in runs)
    seen: dict[tuple, list[dict[str, Any]]] = {}
    for run in runs:
        for row in run["rows"]:
            seen.setdefault(_row_key(row), []).append(
                {"started": run["started"], "ratio": row.get("ratio"), "met": row.get("met")})  # fmt: skip
    for run in runs:
        scenarios = sorted({row["scenario"] for row in run["rows"]})
        merged["not_run"].append(f"run {run['started']}: scenario(s) {', '.join(scenarios) or 'none'}{_pace(run)}")
        again = {_row_key(row) for row in run["rows"]}
        superseded = [row for row in merged["rows"] if _row_key(row) in again]
        if superseded:
            merged["not_run"].append(f"run {run['started']} replaces {len(superseded)} row(s) of an earlier run")
        merged["rows"] = [row for row in merged["rows"] if row not in superseded] + run["rows"]
        merged["not_run"] += [note for note in run.get("not_run", []) if note not in merged["not_run"]]  # said once
    merged["rows"].sort(key=lambda row: row["scenario"])  # stable: a run's own row order is kept
    merged["rows"] = [{**row, "every_run": seen[_row_key(row)]} for row in merged["rows"]]
    return merged


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.report RUN.json… [--out DIR]`: docs/benchmarks.md from several runs' JSON."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("runs", nargs="+", type=Path, help="latest.json files of runs at the same scale")
    parser.add_argument("--out", type=Path, help="write benchmarks.md and latest.json here instead of docs/ and bench/results/")
    args = parser.parse_args(argv)
    merged = merge_runs([json.loads(path.read_text(encoding="utf-8")) for path in args.runs])
    write_docs(merged, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
