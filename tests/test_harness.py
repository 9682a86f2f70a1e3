"""The benchmark harness: interleaved arms, medians, and the choice of clock."""

from __future__ import annotations

import time

import pytest

from benchmarks.harness import Figure, interleaved, throughput_figure


def test_arms_alternate_and_own_figures_pass_through():
    calls: list[str] = []
    arms = {"a": lambda: calls.append("a") or 2.0, "b": lambda: calls.append("b") or 5.0}
    secs = interleaved(arms, repeats=4, warmup=1)
    assert secs == {"a": 2.0, "b": 5.0}
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then AB BA AB BA


def test_cpu_clock_leaves_out_time_off_the_core():
    # A sleeping arm holds no CPU: the wall clock sees the sleep, the CPU clock does not.
    arms = {"sleep": lambda: time.sleep(0.05)}
    assert interleaved(arms, repeats=1, warmup=0, clock="wall")["sleep"] >= 0.045
    assert interleaved(arms, repeats=1, warmup=0, clock="cpu")["sleep"] < 0.02
    with pytest.raises(ValueError, match="clock"):
        interleaved(arms, clock="gpu")


def test_throughput_ratio_and_verdict():
    fig = throughput_figure("x", 100, {"ours": 2.0, "theirs": 4.0}, "ours", "theirs", target=1.5)
    assert (fig.ours, fig.theirs, fig.ratio) == (50.0, 25.0, 2.0)
    assert fig.line().endswith("target>=1.5 PASS")
    assert Figure("y", 0.5, 1, 2, " tok/s", 1.0).line().endswith("MISS")
