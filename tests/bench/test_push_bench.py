"""Scenario 3's harness: a limited agency is measured over the same first deliveries on both sides."""

from __future__ import annotations

from bench.push import run_push


def test_a_limit_measures_the_hub_and_the_bare_loop_over_the_same_whole_batches(tmp_path):
    ((hub, bare),) = run_push(f"sqlite:///{tmp_path / 'hub.sqlite3'}", 30, tmp_path / "work", codes=["GSJ"],
                              limits={"GSJ": 5})  # fmt: skip

    assert hub.extra["routed"] == 30  # GSJ receives every grant
    assert hub.records == bare.records == 20  # rounded up to one whole batch (batch_size 20), on both sides
    assert hub.extra["retrying"] == hub.extra["dead"] == 0
