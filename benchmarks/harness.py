"""Side-by-side timing: arms interleaved, several repeats, the median of each.

Absolute times on shared machines drift, so every figure is a ratio of two arms timed
in the same run, in alternating order (A B, B A, A B, ...), and the median of each arm
is reported with the raw numbers.

``clock="cpu"`` times each arm by the CPU time of the calling thread instead of the wall
clock. With one torch thread on a CPU every operation runs on that thread, so its CPU
time is the work done and leaves out the time other jobs on a shared machine held the
core (wall-clock noise of several percent here). Not for GPUs, whose work is
asynchronous to the thread.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Figure:
    """One benchmark figure: ours over the alternative (higher is better)."""

    name: str
    ratio: float
    ours: float
    theirs: float
    unit: str
    target: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        tgt = "" if self.target is None else f" target>={self.target:g} " + (
            "PASS" if self.ratio >= self.target else "MISS")
        more = "".join(f" {k}={v:.4g}" for k, v in self.extra.items())
        return (f"{self.name} ratio={self.ratio:.2f} ours={self.ours:.4g}{self.unit} "
                f"theirs={self.theirs:.4g}{self.unit}{tgt}{more}")


def interleaved(arms: dict[str, Callable[[], float | None]], repeats: int = 5,
                warmup: int = 1, clock: str = "wall") -> dict[str, float]:
    """Median seconds (or the arm's own returned figure) per arm, arms alternating.

    An arm returns None to be timed by ``clock`` ("wall" or "cpu", see the module
    docstring), or a number it measured itself.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', not {clock!r}")
    now = time.perf_counter if clock == "wall" else time.thread_time
    names = list(arms)
    for _ in range(warmup):
        for n in names:
            arms[n]()
    samples: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            t0 = now()
            got = arms[n]()
            samples[n].append(now() - t0 if got is None else float(got))
    return {n: statistics.median(v) for n, v in samples.items()}


def throughput_figure(name: str, units: float, seconds: dict[str, float], ours: str, theirs: str,
                      unit: str = " tok/s", target: float | None = None) -> Figure:
    """A ratio of throughputs (``units`` per median second) of two timed arms."""
    a, b = units / seconds[ours], units / seconds[theirs]
    return Figure(name, a / b, a, b, unit, target)


def cpu_clock_ok() -> bool:
    """Whether thread CPU time measures the work: torch on the CPU with one thread."""
    import torch

    return torch.get_num_threads() == 1
