"""Side-by-side timing: arms interleaved, a warm-up, several repeats, the median of each,
and one raw results file per figure.

Absolute times on shared machines drift, so every figure is a ratio of two arms timed
in the same run, in alternating order (A B, B A, A B, ...). The clock is the wall
clock (what a user waits for); each arm's thread-CPU time is recorded beside it, never
instead of it. :func:`record` writes the figure with both arms' raw samples, the clock,
repeats, warm-up, sizes, threads, library versions, machine and git commit to
``benchmarks/results/<id>.json``; ``python -m benchmarks.report`` generates
``benchmarks/RESULTS.md`` from those files only.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPEATS, WARMUP = 5, 1


@dataclass(frozen=True)
class Timing:
    """Raw samples of interleaved arms (seconds, wall clock; thread CPU beside it)."""

    wall: dict[str, list[float]]
    cpu: dict[str, list[float]]
    repeats: int
    warmup: int

    def median(self, arm: str) -> float:
        return statistics.median(self.wall[arm])


def interleaved(arms: dict[str, Callable[[], Any]], repeats: int = REPEATS,
                warmup: int = WARMUP) -> Timing:
    """Time every arm ``repeats`` times after ``warmup`` untimed rounds, alternating the
    order each round so drift hits every arm alike."""
    names = list(arms)
    for _ in range(warmup):
        for n in names:
            arms[n]()
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in (names if r % 2 == 0 else names[::-1]):
            c0, t0 = time.thread_time(), time.perf_counter()
            arms[n]()
            wall[n].append(time.perf_counter() - t0)
            cpu[n].append(time.thread_time() - c0)
    return Timing(wall, cpu, repeats, warmup)


@dataclass(frozen=True)
class Figure:
    """One figure: the throughput of ``ours`` over ``theirs`` (higher is better)."""

    id: str
    title: str
    ours: str
    theirs: str
    units: float
    """Work per call (tokens), so throughput = units / median seconds."""
    timing: Timing
    target: float | None = None
    sizes: dict[str, Any] = field(default_factory=dict)
    unit: str = "tok/s"
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.timing.median(self.theirs) / self.timing.median(self.ours)

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else self.ratio >= self.target

    def line(self) -> str:
        tgt = "" if self.target is None else f" target>={self.target:g} " + (
            "PASS" if self.passed else "MISS")
        a = self.units / self.timing.median(self.ours)
        b = self.units / self.timing.median(self.theirs)
        return f"{self.id} ratio={self.ratio:.3f} ours={a:.4g} theirs={b:.4g} {self.unit}{tgt}"


def environment() -> dict[str, Any]:
    """Versions, machine and commit of this run."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    libs = {}
    for lib in ("torch", "transformers", "transformer-lens", "sae-lens", "numpy"):
        try:
            libs[lib] = version(lib)
        except PackageNotFoundError:
            libs[lib] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "mechreason"],
                                    capture_output=True, text=True, cwd=Path(__file__).parent,
                                    check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, None
    return {"versions": libs, "python": platform.python_version(),
            "machine": {"processor": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                        "device": "cuda:" + torch.cuda.get_device_name(0)
                        if torch.cuda.is_available() else "cpu"},
            "commit": commit, "mechreason_dirty": dirty,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def record(fig: Figure, command: str, out: Path = RESULTS) -> Path:
    """Write ``fig`` with its raw samples and environment to ``out/<id>.json``."""
    out.mkdir(parents=True, exist_ok=True)
    t = fig.timing
    data = {
        "id": fig.id, "title": fig.title, "ours": fig.ours, "theirs": fig.theirs,
        "ratio": fig.ratio, "target": fig.target, "passed": fig.passed,
        "units_per_call": fig.units, "unit": fig.unit, "note": fig.note,
        "throughput": {a: fig.units / t.median(a) for a in (fig.ours, fig.theirs)},
        "clock": "wall (time.perf_counter); thread CPU recorded beside it",
        "repeats": t.repeats, "warmup": t.warmup, "interleaved": True,
        "samples_wall_s": {a: t.wall[a] for a in (fig.ours, fig.theirs)},
        "samples_thread_cpu_s": {a: t.cpu[a] for a in (fig.ours, fig.theirs)},
        "sizes": fig.sizes, "command": command, **environment(),
    }
    path = out / f"{fig.id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def figure(id: str, title: str, timing: Timing, ours: str, theirs: str, units: float,
           **kw: Any) -> Figure:
    return Figure(id=id, title=title, ours=ours, theirs=theirs, units=units, timing=timing, **kw)


@dataclass(frozen=True)
class CountFigure:
    """A figure that counts work instead of timing it (e.g. rollouts an adaptive rule
    spends / a full run): ``ratio = counts[ours] / counts[theirs]``, lower is better,
    and it passes only if ``ratio <= target`` and its quality condition holds."""

    id: str
    title: str
    ours: str
    theirs: str
    counts: dict[str, float]
    target: float | None
    condition: str
    """The quality the saving must keep, e.g. ``Spearman of counterfactual_kl >= 0.95``."""
    condition_value: float
    condition_met: bool
    unit: str = "rollouts"
    sizes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.counts[self.ours] / self.counts[self.theirs]

    @property
    def passed(self) -> bool | None:
        return None if self.target is None else (self.ratio <= self.target and self.condition_met)

    def line(self) -> str:
        tgt = "" if self.target is None else f" target<={self.target:g} " + (
            "PASS" if self.passed else "MISS")
        return (f"{self.id} ratio={self.ratio:.3f} {self.ours}={self.counts[self.ours]:g} "
                f"{self.theirs}={self.counts[self.theirs]:g} {self.unit} "
                f"({self.condition}: {self.condition_value:.3f}){tgt}")


def record_count(fig: CountFigure, command: str, out: Path = RESULTS) -> Path:
    """Write a :class:`CountFigure` to ``out/<id>.json`` (``kind: count``)."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"id": fig.id, "kind": "count", "title": fig.title, "ours": fig.ours,
            "theirs": fig.theirs, "counts": fig.counts, "ratio": fig.ratio, "target": fig.target,
            "direction": "<=", "passed": fig.passed, "unit": fig.unit,
            "condition": fig.condition, "condition_value": fig.condition_value,
            "condition_met": fig.condition_met, "sizes": fig.sizes, "command": command,
            **environment()}
    path = out / f"{fig.id}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path
