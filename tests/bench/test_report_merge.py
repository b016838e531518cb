"""Several runs of one scale become one benchmarks table (scenarios run one after another)."""

from __future__ import annotations

import json

import pytest

from bench.report import main, merge_runs
from tests.helpers import REPO


def _run(started: str, scenarios: list[str], scale: str = "full") -> dict:
    rows = [{"scenario": s, "title": f"scenario {s}", "db": "sqlite", "hub": {"name": f"hub {s}", "records": 10},
             "baseline": {"name": "base", "note": "same"}, "ratio": 1.0, "target": "t", "met": True}
            for s in scenarios]  # fmt: skip
    return {"scale": scale, "sizes": {}, "started": started, "machine": "m", "sizes_note": "n", "rows": rows,
            "not_run": [f"note of {started}"]}  # fmt: skip


def test_rows_of_every_run_in_scenario_order_with_each_runs_time(tmp_path):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text(json.dumps(_run("T1", ["1", "2", "5"])), encoding="utf-8")
    second.write_text(json.dumps(_run("T2", ["4"])), encoding="utf-8")
    assert main([str(first), str(second), "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "benchmarks.md").read_text(encoding="utf-8")
    first_table = table.split("\n## ")[0]  # bench/analysis.md follows, with tables of its own
    numbers = [line.split("|")[1].strip() for line in first_table.splitlines() if line.startswith("| ")]
    assert [n for n in numbers if n.isdigit()] == ["1", "2", "4", "5"]
    assert "run T1: scenario(s) 1, 2, 5" in table and "run T2: scenario(s) 4" in table and "note of T2" in table


def test_runs_of_different_scales_are_refused():
    with pytest.raises(ValueError, match="different scales"):
        merge_runs([_run("T1", ["1"]), _run("T2", ["4"], scale="small")])


def test_a_later_runs_row_replaces_the_same_row_of_an_earlier_run():
    earlier, later = _run("T1", ["1", "2"]), _run("T2", ["2"])
    later["rows"][0]["hub"]["records"] = 20
    merged = merge_runs([earlier, later])
    assert [(row["scenario"], row["hub"]["records"]) for row in merged["rows"]] == [("1", 10), ("2", 20)]
    assert "run T2 replaces 1 row(s) of an earlier run" in merged["not_run"]


def test_a_row_measured_by_several_runs_shows_every_runs_ratio_and_how_often_it_met_its_target(tmp_path):
    runs = [_run("T1", ["1", "2"]), _run("T2", ["1"]), _run("T3", ["1"])]
    for run, ratio, met in zip(runs, (2.5, 3.25, 2.0), (False, True, False)):
        run["rows"][0].update(ratio=ratio, met=met)
    paths = []
    for i, run in enumerate(runs):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(run), encoding="utf-8")

    assert main([*map(str, paths), "--out", str(tmp_path / "out")]) == 0

    table = (tmp_path / "out" / "benchmarks.md").read_text(encoding="utf-8")
    assert "| 1 | scenario 1 | sqlite | 2.50, 3.25, 2.00 | 2.00 – 3.25 | 1 of 3 runs |" in table
    assert "| 2 | scenario 2 | sqlite |" not in table.split("## Each row in every run")[1]  # measured once
    merged = json.loads((tmp_path / "out" / "latest.json").read_text(encoding="utf-8"))
    assert [seen["started"] for seen in merged["rows"][0]["every_run"]] == ["T1", "T2", "T3"]


def test_a_note_every_run_makes_is_said_once():
    runs = [_run("T1", ["1"]), _run("T2", ["1"])]
    for run in runs:
        run["not_run"].append("1: how the baseline was measured")
    notes = merge_runs(runs)["not_run"]
    assert notes.count("1: how the baseline was measured") == 1 and "note of T2" in notes


def test_where_the_targets_stand_comes_right_under_the_tables(tmp_path):
    run = tmp_path / "run.json"
    run.write_text(json.dumps(_run("T1", ["1", "4"])), encoding="utf-8")
    assert main([str(run), "--out", str(tmp_path / "out")]) == 0
    report = (tmp_path / "out" / "benchmarks.md").read_text(encoding="utf-8")
    headings = [line for line in report.splitlines() if line.startswith("## ")]
    verdict = (REPO / "bench" / "verdict.md").read_text(encoding="utf-8").splitlines()[0]
    assert headings[:3] == [verdict, "## Not run, and notes", "## Baselines"]  # the analysis's rounds follow
    assert "| 1 | pull ≥ 3× dlt |" in report


def test_each_runs_note_says_how_fast_the_machine_ran_when_the_run_recorded_it(tmp_path):
    slow, unknown = _run("T1", ["1"]), _run("T2", ["4"])
    slow["pace_us"] = {"start": 8.97, "end": 9.41}
    merged = merge_runs([slow, unknown])
    assert ("run T1: scenario(s) 1; machine pace 9.0 µs at its start and 9.4 µs at its end "
            "(to sum 1,000 integers: ~4 in a fast phase, 6–9 in a slow one)") in merged["not_run"]
    assert "run T2: scenario(s) 4" in merged["not_run"]  # runs before the pace was recorded say nothing of it
