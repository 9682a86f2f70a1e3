"""``mechreason traces``: generate graded, sentence-labelled reasoning traces (JSONL)."""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

from mechreason.cli._args import difficulty, nonneg_int, positive_int, probability, temperature
from mechreason.cli._config import add_config, from_args
from mechreason.model.engine import SamplingConfig
from mechreason.traces.config import TracesConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "traces", help="generate reasoning traces on problems (JSONL, resumable)",
        description="Put problems to a model in a prompt style, grade the answers, split "
                    "the traces into labelled sentences with token spans, and append one "
                    "JSON record per trace to --out. Re-running skips finished ids. "
                    "Schema: docs/traces.md.")
    p.add_argument("--model", default=None, help="model name (default: smollm2-135m-instruct)")
    p.add_argument("--out", required=True, help="traces JSONL (appended to)")
    add_config(p, TracesConfig, types={"n": positive_int, "difficulty": difficulty})
    add_config(p, SamplingConfig, skip={"stop"}, types={
        "max_new_tokens": positive_int, "temperature": temperature, "top_p": probability,
        "seed": nonneg_int, "batch_size": positive_int})  # --seed also picks the problems
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="the model's dtype (and vLLM's, with --backend vllm)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="generate on Ray workers, each loading its own model: 'local' (this "
                        "machine), 'auto' (the cluster this machine joined) or an address; "
                        "the file is written here, resumable, each trace once")
    p.add_argument("--workers", type=positive_int, default=2, help="Ray workers (default 2)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mechreason.model.loading import load_model
    from mechreason.model.weights import DEFAULT_MODEL
    from mechreason.outputs import check_out_file, output_lock
    from mechreason.traces.labels import get_labeller
    from mechreason.traces.prompts import get_style
    from mechreason.traces.run import run_traces, summarize
    from mechreason.traces.tasks import make_problems
    from mechreason.validate import check_device, check_model_name

    # Check everything the user typed before loading the model.
    check_model_name(args.model or DEFAULT_MODEL)
    check_device(args.device)
    check_out_file(args.out)
    if args.backend == "vllm":
        from mechreason.backends.vllm_backend import require_python

        require_python()
    cfg = from_args(TracesConfig, args)
    style = get_style(cfg.style)
    sampling = from_args(SamplingConfig, args)
    problems = make_problems(cfg.task, cfg.n, seed=sampling.seed, difficulty=cfg.difficulty,
                             data_file=cfg.data_file)
    if args.ray:
        return _run_ray(args, cfg, style.name, sampling, problems)
    with output_lock(args.out, is_dir=False), contextlib.ExitStack() as stack:
        model = load_model(args.model or DEFAULT_MODEL, device=args.device, dtype=args.dtype)
        labeller = get_labeller(cfg.labeller, model)
        kw = {}
        if args.backend == "vllm":
            from mechreason.backends.vllm_backend import VLLMBackend
            from mechreason.model.generation import iter_generate_via

            backend = stack.enter_context(VLLMBackend(model, dtype=args.dtype))
            kw["generate_fn"] = iter_generate_via(backend)
        records = run_traces(model, problems, args.out, style=style.name, sampling=sampling,
                             labeller=labeller, keep_tail=not cfg.drop_tail, progress=True,
                             **kw)
    print(f"{len(records)} traces in {args.out}")
    print(format_summary(summarize(records)))
    print(format_summary(summarize(records, by=("style",))))
    return 0


def _run_ray(args: argparse.Namespace, cfg: TracesConfig, style: str, sampling: Any,
             problems: list) -> int:
    from mechreason.model.weights import DEFAULT_MODEL
    from mechreason.scale.traces import run_traces_ray
    from mechreason.scale.workers import ModelSpec
    from mechreason.traces.run import summarize

    spec = ModelSpec(args.model or DEFAULT_MODEL, device=args.device or "cpu", dtype=args.dtype,
                     backend="vllm" if args.backend == "vllm" else "engine")
    records = run_traces_ray(spec, problems, args.out, style=style, sampling=sampling,
                             address=args.ray, workers=args.workers, labeller=cfg.labeller,
                             keep_tail=not cfg.drop_tail)
    print(f"{len(records)} traces in {args.out}")
    print(format_summary(summarize(records)))
    return 0


def format_summary(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`mechreason.traces.run.summarize` rows."""
    from mechreason.traces.labels import FUNCTION_TAGS

    keys = [k for k in rows[0] if k in ("style", "difficulty", "task")] if rows else []
    head = [*keys, "n", "acc [95% CI]", "parse", "tokens", "sents", "backtrack",
            *(t.split("_")[0][:8] for t in FUNCTION_TAGS)]
    lines = [head]
    for r in rows:
        lines.append([*(str(r[k]) for k in keys), str(r["n"]),
                      f"{r['accuracy']:.2f} [{r['ci_low']:.2f},{r['ci_high']:.2f}]",
                      f"{r['parse_rate']:.2f}", f"{r['mean_tokens']:.1f}",
                      f"{r['mean_sentences']:.1f}", f"{r['beh:backtracking']:.3f}",
                      *(f"{r['tag:' + t]:.2f}" for t in FUNCTION_TAGS)])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in lines)
