"""The benchmark harness runs end to end at its tiny scale and writes its report (no timing asserted)."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import SCALES, main
from bench.push import PUSH_AGENCIES


def test_tiny_run_writes_every_scenario_to_json_and_markdown(tmp_path):
    code = main(["--scale", "tiny", "--db", "sqlite", "--out", str(tmp_path)])

    run = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    markdown = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert code == 0, run["not_run"]
    assert {row["scenario"] for row in run["rows"]} == {"1", "2", "3", "4", "5"}
    assert all(row["hub"]["records"] > 0 for row in run["rows"])
    assert "| 1 | REST pull" in markdown and "6 scale-out" in markdown
    assert run["pace_us"]["start"] > 0 and run["pace_us"]["end"] > 0 and "machine pace" in markdown
    for scenario, size in (("1", SCALES["tiny"]["pull"]), ("2", SCALES["tiny"]["drop"])):
        # each bound covers every record the hub stores: one checks them, the other stores them
        rows = [row for row in run["rows"] if row["scenario"] == scenario]
        assert {row["hub"]["records"] for row in rows} == {size}
        (checked,) = [row for row in rows if "(no database: the bound)" in row["title"]]
        (stored,) = [row for row in rows if "store only" in row["title"]]
        assert checked["hub"]["extra"]["refused"] == 0
        assert stored["hub"]["extra"]["created"] == size and stored["hub"]["extra"]["quarantined"] == 0
        assert stored["hub"]["seconds"] > 0
    push = {row["title"].split()[1]: row for row in run["rows"] if row["scenario"] == "3"}
    assert sorted(push) == sorted(PUSH_AGENCIES)  # a row per agency, each protocol and security as its data file says
    assert all(row["hub"]["records"] == row["baseline"]["records"] for row in push.values())  # the same messages


@pytest.mark.slow
def test_tiny_scaleout_runs_one_and_two_real_workers_on_redis_and_postgres(tmp_path, redis_url, pg_database_url):
    """Scenario 6 at tiny scale: both runs complete and the report carries the two-to-one ratio."""
    code = main(["--scale", "tiny", "--only", "scaleout", "--db", "postgres", "--out", str(tmp_path)])

    run = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert code == 0, run["not_run"]
    (row,) = [row for row in run["rows"] if row["scenario"] == "6"]
    assert row["hub"]["name"] == "2 workers" and row["baseline"]["name"] == "1 worker"
    assert row["hub"]["records"] == row["baseline"]["records"] > 0
    assert row["ratio"] is not None
