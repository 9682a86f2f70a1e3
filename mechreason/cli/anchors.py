"""``mechreason anchors``: thought anchors for one trace of a traces file (resampling,
receiver heads, attention suppression; Bogdan et al. 2025). The options are generated
from :class:`mechreason.anchors.analysis.AnchorsConfig` and its nested configs: the
resampling ones unprefixed (``--rollouts``), the others prefixed by their field
(``--receivers-top-k``, ``--suppression-batch-size``, ``--adaptive-tolerance``)."""

from __future__ import annotations

import argparse
import contextlib

from mechreason.anchors.adaptive import AdaptiveConfig
from mechreason.anchors.analysis import METHODS, AnchorsConfig
from mechreason.anchors.receivers import ReceiverConfig
from mechreason.anchors.resampling import ResampleConfig
from mechreason.anchors.suppression import SuppressionConfig
from mechreason.cli._args import (
    finite_float,
    nonneg_int,
    positive_float,
    positive_int,
    probability,
    unit_interval,
)
from mechreason.cli._config import add_config, from_args

_COUNTS = dict.fromkeys(("rollouts", "max_new_tokens", "forced_max_tokens", "batch_size",
                         "top_k", "proximity_ignore", "split_halves", "batch", "min_rollouts",
                         "receiver_traces"), positive_int)
TYPES = {**_COUNTS, "temperature": positive_float, "top_p": probability, "seed": nonneg_int,
         "similarity": finite_float, "kl_epsilon": positive_float, "kl_floor": positive_float,
         "tolerance": unit_interval, "index": nonneg_int}
NESTED = {"receivers": ReceiverConfig, "suppression": SuppressionConfig,
          "adaptive": AdaptiveConfig}
"""Nested configs whose options carry their field name as a prefix."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anchors", help="which sentences of a reasoning trace matter (thought anchors)",
        description="Sentence importance of one trace by black-box resampling, receiver "
                    "heads and attention suppression; writes an artifact directory with "
                    "thought-anchors.com viewer JSON.")
    p.add_argument("--model", default=None, help="model name (default: smollm2-135m-instruct)")
    p.add_argument("--traces", required=True, help="traces JSONL (mechreason traces output)")
    p.add_argument("--out", required=True, help="output directory (re-running resumes)")
    p.add_argument("--methods", default=None, metavar="A,B,...",
                   help=f"comma-separated subset of {','.join(METHODS)} (default: all three; "
                        "resample alone with --backend vllm, whose rollouts it runs)")
    add_config(p, AnchorsConfig, types=TYPES, skip={"methods", *NESTED, "resample"})
    add_config(p, ResampleConfig, types=TYPES)
    p.add_argument("--adaptive", dest="adaptive_on", action=argparse.BooleanOptionalAction,
                   default=False,
                   help="stop resampling a sentence once its answer distribution is settled "
                        "(--rollouts is then the most it gets; default: off, see B8)")
    for name, cls in NESTED.items():  # receivers' seed is --seed, as the resampling's
        add_config(p, cls, types=TYPES, prefix=name, skip={"seed"})
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the rollouts on Ray workers: 'local' (this machine), 'auto' (the "
                        "cluster this machine joined) or a cluster address")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="Ray workers, each loading its own model (default 2)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> AnchorsConfig:
    """The :class:`AnchorsConfig` the options describe."""
    methods = args.methods or ("resample" if args.backend == "vllm" else ",".join(METHODS))
    return from_args(
        AnchorsConfig, args, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        resample=from_args(ResampleConfig, args),
        receivers=from_args(ReceiverConfig, args, prefix="receivers", seed=args.seed),
        suppression=from_args(SuppressionConfig, args, prefix="suppression"),
        adaptive=from_args(AdaptiveConfig, args, prefix="adaptive") if args.adaptive_on else None)


def run(args: argparse.Namespace) -> int:
    import json

    from mechreason.anchors.analysis import analyze, load_traces
    from mechreason.model.loading import load_model
    from mechreason.model.weights import DEFAULT_MODEL
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.traces.run import read_traces
    from mechreason.validate import check_device, check_model_name

    vllm = args.backend == "vllm"
    cfg = config_from_args(args)
    check_model_name(args.model or DEFAULT_MODEL)
    check_device(args.device)
    check_out_dir(args.out)
    read_traces(args.traces)  # a missing, binary or malformed file fails before the model loads
    if vllm:
        from mechreason.backends.base import require_hooks
        from mechreason.backends.vllm_backend import require_python

        for m in ("receivers", "suppression"):
            if m in cfg.methods:
                require_hooks("vllm", f"method {m!r}")
        require_python()
    with output_lock(args.out), contextlib.ExitStack() as stack:
        model = load_model(args.model or DEFAULT_MODEL, device=args.device)
        traces = load_traces(model, args.traces)
        backend = None
        if vllm and not args.ray:  # with --ray, each worker runs a vLLM engine of its own
            from mechreason.backends.vllm_backend import VLLMBackend

            backend = stack.enter_context(VLLMBackend(model))
        runner = None
        if args.ray:
            from mechreason.scale.rollouts import RayRunner
            from mechreason.scale.workers import ModelSpec

            spec = ModelSpec(model.name if args.model is None else args.model,
                             device=args.device or "cpu", backend="vllm" if vllm else "engine")
            runner = RayRunner(args.ray, spec, workers=args.workers)
            stack.callback(runner.close)
        summary = analyze(model, traces, cfg, args.out, progress=True, backend=backend,
                          runner=runner)
    print(json.dumps({"out": args.out, **summary}, indent=1, default=str)[:4000])
    return 0
