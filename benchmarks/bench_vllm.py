"""B7 (DESIGN section 10): thought-anchor rollouts through the vLLM backend / our engine.

B4's rollouts (B4's trace, the greedy CoT of its question cut to its first sentences;
R = 8 per sentence from the prefix before it, temperature 0.6, top-p 0.95, a cap of 32
new tokens, early stop once the answer is out; R = 16 with a cap of 64 did not finish
in 30 minutes on this shared machine). Ours here is vLLM: :func:`backend_rollouts` through
:class:`~mechreason.backends.vllm_backend.VLLMBackend` (float32, prefix caching, one
request and seed per rollout, the stop applied afterwards). The baseline is our engine's
:func:`batched_rollouts` (one shared prefill, 32 rows, early stop), the B4 winner. The
same jobs and seeds on both; different samplers, so the tokens differ: both arms' token
counts and tokens/s are recorded in ``sizes`` beside the rollouts/s ratio. vLLM's start
(load, smoke test) is outside the clock and recorded as ``vllm_start_s``.
Needs vLLM's environment (``scripts/setup.sh --with-vllm``). Target >= 4.
"""

from __future__ import annotations

import os
import time

from benchmarks.harness import Figure, figure, interleaved

FIGURES = ["B7"]
R = int(os.environ.get("MECHREASON_B7_R", "8"))
CAP = int(os.environ.get("MECHREASON_B7_CAP", "32"))
REPEATS = 5


def b7(model, trace) -> Figure:
    from mechreason.anchors.resampling import answer_stop
    from mechreason.anchors.rollouts import Job, backend_rollouts, batched_rollouts, rollout_seed
    from mechreason.backends.vllm_backend import VLLMBackend
    from mechreason.model.engine import SamplingConfig

    sampling = SamplingConfig(temperature=0.6, top_p=0.95, max_new_tokens=CAP)
    stop = answer_stop(model)
    jobs = [Job(f"{i}/{r}", a, rollout_seed(0, i, r)) for i, (a, _) in enumerate(trace.spans)
            for r in range(R)]
    tokens: dict[str, list[int]] = {"vllm": [], "engine": []}
    t0 = time.perf_counter()
    with VLLMBackend(model, dtype="float32") as vllm:
        start = time.perf_counter() - t0

        def run(arm: str) -> None:
            runs = (backend_rollouts(model, vllm, trace.ids, jobs, sampling, stop=stop)
                    if arm == "vllm" else
                    batched_rollouts(model, trace.ids, jobs, sampling, batch_size=32, stop=stop))
            out = list(runs)
            assert len(out) == len(jobs)
            tokens[arm].append(sum(len(t) for _, t in out))

        t = interleaved({"vllm": lambda: run("vllm"), "engine": lambda: run("engine")},
                        repeats=REPEATS)
        version = vllm.version
    per_call = {a: sum(v) / len(v) for a, v in tokens.items()}
    tok_s = {a: per_call[a] / t.median(a) for a in tokens}
    return figure("B7", "rollouts/s: vLLM backend / our engine (B4's rollouts, float32, CPU)",
                  t, "vllm", "engine", len(jobs), target=4.0, unit="rollouts/s",
                  sizes={"sentences": trace.n, "rollouts_per_sentence": R, "cap": CAP,
                         "tokens_per_call": per_call, "tokens_per_s": tok_s,
                         "vllm_start_s": start, "vllm": version, "vllm_dtype": "float32",
                         "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
                  note=f"tokens/s: vLLM {tok_s['vllm']:.1f}, engine {tok_s['engine']:.1f}; "
                       f"vLLM start {start:.0f} s, not timed")


def run(ids: list[str]) -> list[Figure]:
    from benchmarks.bench_anchors import _trace
    from mechreason.model.loading import load_model

    model = load_model("smollm2-135m-instruct", device="cpu")
    return [b7(model, _trace(model))] if "B7" in ids else []
