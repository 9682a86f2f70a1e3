"""B9 (DESIGN section 10): traces of the same problems on two Ray workers on this
machine / in one process; target >= 0.9 per core used, i.e. a ratio >= 1.8 with the two
workers on two cores (OMP_NUM_THREADS=1 everywhere: one core per worker, one for the
single process).

The work: 8 arithmetic problems (difficulties 1..5 cycling, seed 0), chain-of-thought
prompt, greedy, 96 new tokens, batches of 4, SmolLM2-135M-Instruct. One process:
``run_traces`` with the model loaded. Ray: ``run_traces_ray`` on a local Ray instance
with two warm workers (each has loaded its model before timing: a cluster's workers
stay up between jobs), shards of 4 problems, the driver merging records into the file.
What the figure charges to Ray is the driver's overhead (sharding, transfer, merge)
and the two workers' contention for the machine. Each call writes a fresh file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.harness import Figure, figure, interleaved

FIGURES = ["B9"]
N, TOKENS, BATCH = 8, 96, 4


def b9() -> Figure:
    from mechreason.model.generation import SamplingConfig
    from mechreason.scale.ray_driver import Pool, connect
    from mechreason.scale.traces import run_traces_ray
    from mechreason.scale.workers import ModelSpec, make_generator
    from mechreason.traces.run import run_traces
    from mechreason.traces.tasks import make_problems

    spec = ModelSpec("smollm2-135m-instruct")
    model = make_generator(spec).model
    problems = make_problems("arithmetic", N, seed=0)
    cfg = SamplingConfig(max_new_tokens=TOKENS, temperature=0.0, batch_size=BATCH)
    connect("local", num_cpus=2)
    pool = Pool(make_generator, (spec,), workers=2)
    pool.pids()  # both workers loaded before timing
    tmp = Path(tempfile.mkdtemp(prefix="b9-"))
    calls = {"one": 0, "ray": 0}
    got: dict[str, list] = {}

    def one() -> None:
        calls["one"] += 1
        got["one"] = run_traces(model, problems, tmp / f"one{calls['one']}.jsonl", style="cot",
                                sampling=cfg)

    def ray() -> None:
        calls["ray"] += 1
        got["ray"] = run_traces_ray(spec, problems, tmp / f"ray{calls['ray']}.jsonl",
                                    style="cot", sampling=cfg, pool=pool, shard_size=BATCH)

    try:
        t = interleaved({"ray": ray, "one": one})
    finally:
        pool.close()
    same = [r["generated_ids"] for r in got["one"]] == [r["generated_ids"] for r in got["ray"]]
    tokens = sum(r["n_generated_tokens"] for r in got["one"])
    return figure("B9", "traces: two Ray workers on this machine / one process (ratio; per "
                  "core used = ratio / 2)", t, "ray", "one", tokens, target=1.8, unit="tok/s",
                  sizes={"problems": N, "max_new_tokens": TOKENS, "batch_size": BATCH,
                         "workers": 2, "cores_used": {"ray": 2, "one": 1},
                         "same_records": same})


def run(ids: list[str]) -> list[Figure]:
    return [b9()] if "B9" in ids else []
