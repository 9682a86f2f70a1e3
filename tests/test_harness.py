"""The benchmark harness: interleaved arms, wall-clock samples, raw results files, and a
RESULTS.md generated from them (and only from them)."""

from __future__ import annotations

import json
import time

from benchmarks import report
from benchmarks.harness import figure, interleaved, record


def test_arms_alternate_after_a_warmup():
    calls: list[str] = []
    arms = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    t = interleaved(arms, repeats=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then AB BA AB BA
    assert len(t.wall["a"]) == len(t.cpu["b"]) == 4


def test_wall_clock_is_the_figure_and_cpu_time_sits_beside_it():
    # a sleeping arm holds no CPU: the wall clock sees the sleep, thread CPU time does not
    t = interleaved({"sleep": lambda: time.sleep(0.05), "busy": lambda: sum(range(10_000))},
                    repeats=3, warmup=0)
    assert t.median("sleep") >= 0.045 and max(t.cpu["sleep"]) < 0.02
    fig = figure("X", "x", t, "busy", "sleep", units=100, target=1.0)
    assert fig.ratio == t.median("sleep") / t.median("busy") and fig.passed


def test_record_and_report_agree(tmp_path):
    t = interleaved({"ours": lambda: time.sleep(0.002), "theirs": lambda: time.sleep(0.004)},
                    repeats=5, warmup=1)
    fig = figure("B9-batch1", "ours / theirs", t, "ours", "theirs", units=10, target=1.2,
                 sizes={"batch": 1})
    path = record(fig, "python -m benchmarks.run B9", out=tmp_path)
    rec = json.loads(path.read_text())
    assert rec["samples_wall_s"]["ours"] == t.wall["ours"] and rec["repeats"] == 5
    assert rec["warmup"] == 1 and rec["versions"]["torch"] and rec["sizes"] == {"batch": 1}
    text = report.render(report.load(tmp_path), ["B9", "B10"])
    assert f"**{fig.ratio:.3f}**" in text and "python -m benchmarks.run B9" in text
    assert "not measured since results became generated files: B10." in text
    rec["samples_wall_s"]["ours"] = [1.0] * 5  # a typed-in ratio cannot survive: recomputed
    path.write_text(json.dumps(rec))
    assert f"**{t.median('theirs') / 1.0:.3f}**" in report.render(report.load(tmp_path), [])


def test_results_md_is_generated_from_the_results_files():
    assert report.OUT.read_text() == report.render(report.load(), report._defined())


def test_count_figure_needs_its_condition(tmp_path):
    from benchmarks.harness import CountFigure, record_count

    def fig(ours, rho):
        return CountFigure(id="B8", title="adaptive / full", ours="adaptive", theirs="full",
                           counts={"adaptive": ours, "full": 100}, target=0.6,
                           condition="Spearman >= 0.95", condition_value=rho,
                           condition_met=rho >= 0.95)

    assert fig(50, 0.97).passed and not fig(50, 0.9).passed and not fig(70, 0.99).passed
    record_count(fig(50, 0.9), "python -m benchmarks.run B8", out=tmp_path)
    text = report.render(report.load(tmp_path), ["B8"])
    assert "**0.500**" in text and "**MISS**" in text and "not met" in text
    assert "not measured" not in text
    record_count(fig(55, 0.96), "python -m benchmarks.run B8", out=tmp_path)
    assert "| <= 0.6 pass |" in report.render(report.load(tmp_path), ["B8"])


def test_the_gpu_script_runs_its_engine_figures_on_a_tiny_shape(tmp_path):
    """benchmarks/gpu.py cannot run here (no GPU), so its engine half runs on a tiny
    random model on the CPU (--smoke): every figure is written with both arms' samples,
    and every steered and unsteered row makes its full length (the random model must
    never stop early, or the arms would do unequal work)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "engine", "--smoke",
                          str(tmp_path)], cwd=Path(__file__).parent.parent, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == sorted(f"GPU-{f}-batch{b}.json" for f in ("B0", "B1a", "B1b") for b in (1, 2))
    for p in tmp_path.glob("*.json"):
        d = json.loads(p.read_text())
        assert d["sizes"]["device"] == "cpu" and d["sizes"]["model"] == "random:smoke-shape"
        assert all(len(v) == d["repeats"] for v in d["samples_wall_s"].values())
