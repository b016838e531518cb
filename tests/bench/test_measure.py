"""A measured block's peak memory is its own, not an earlier side's in the same process."""

from __future__ import annotations

import sys

import pytest

from bench.measure import peak_rss_mb, timed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peak is reset through /proc")
def test_peak_after_a_timed_block_leaves_out_what_an_earlier_side_held_and_freed():
    held = b"x" * (300 * 2**20)  # written, so resident: as the raw load's tuples are, before the hub runs
    earlier_peak = peak_rss_mb()
    del held

    with timed():
        small = b"x" * (10 * 2**20)
    del small

    assert earlier_peak - peak_rss_mb() > 200  # MiB
