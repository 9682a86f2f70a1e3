"""Run the benchmarks: ``python -m benchmarks.run [B0 B1a ...]``.

Each ``benchmarks/bench_*.py`` module exposes ``FIGURES`` (the ids it measures) and
``run(ids) -> list[Figure]``. Every figure is printed as one line and written with its
raw samples to ``benchmarks/results/<id>.json`` (:func:`benchmarks.harness.record`);
``RESULTS.md`` is then regenerated from all results files (:mod:`benchmarks.report`).
Run one heavy benchmark at a time, with ``OMP_NUM_THREADS=1`` on a shared CPU machine.
"""

from __future__ import annotations

import importlib
import pkgutil
import shlex
import sys
from pathlib import Path

from benchmarks import report
from benchmarks.harness import CountFigure, record, record_count


def main(argv: list[str]) -> int:
    wanted = {a.upper() for a in argv}
    command = "python -m benchmarks.run " + shlex.join(argv)
    here = Path(__file__).parent
    for info in sorted(pkgutil.iter_modules([str(here)]), key=lambda i: i.name):
        if not info.name.startswith("bench_"):
            continue
        mod = importlib.import_module(f"benchmarks.{info.name}")
        ids = [f for f in mod.FIGURES if not wanted or f.upper() in wanted]
        if not ids:
            continue
        for fig in mod.run(ids):
            (record_count if isinstance(fig, CountFigure) else record)(fig, command)
            print(fig.line(), flush=True)
    report.write()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
