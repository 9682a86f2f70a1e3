"""``mechreason anchors``: thought anchors for one trace of a traces file (resampling,
receiver heads, attention suppression; Bogdan et al. 2025). A thin shell over
:class:`mechreason.anchors.analysis.AnchorsConfig`."""

from __future__ import annotations

import argparse
import contextlib

from mechreason.cli._args import nonneg_int, positive_int, probability


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "anchors", help="which sentences of a reasoning trace matter (thought anchors)",
        description="Sentence importance of one trace by black-box resampling, receiver "
                    "heads and attention suppression; writes an artifact directory with "
                    "thought-anchors.com viewer JSON.")
    p.add_argument("--model", default=None, help="model name (default: smollm2-135m-instruct)")
    p.add_argument("--traces", required=True, help="traces JSONL (mechreason traces output)")
    p.add_argument("--index", type=nonneg_int, default=0, help="which trace to analyse (default 0)")
    p.add_argument("--rollouts", type=positive_int, default=16,
                   help="rollouts per sentence (default 16)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of resample,receivers,suppression (default: "
                        "all three; resample with --backend vllm, whose rollouts it runs)")
    p.add_argument("--out", required=True, help="output directory (re-running resumes)")
    p.add_argument("--max-new-tokens", type=positive_int, default=256, help="rollout length cap")
    p.add_argument("--batch-size", type=positive_int, default=32, help="rollouts per batch")
    p.add_argument("--no-forced", action="store_true", help="skip forced-answer rollouts")
    p.add_argument("--receiver-traces", type=positive_int, default=None,
                   help="traces used to choose receiver heads (default: all in the file)")
    p.add_argument("--top-k", type=positive_int, default=20, help="receiver heads kept (default 20)")
    p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=False,
                   help="stop resampling a sentence once its answer distribution is settled "
                        "(--rollouts is then the most it gets; default: off, see B8)")
    p.add_argument("--tolerance", type=probability, default=0.1,
                   help="adaptive: largest change of the answer distribution (total variation) "
                        "over the last batch that counts as settled (default 0.1)")
    p.add_argument("--adaptive-batch", type=positive_int, default=4,
                   help="adaptive: rollouts added per round to an unsettled sentence (default 4)")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the rollouts on Ray workers: 'local' (this machine), 'auto' (the "
                        "cluster this machine joined) or a cluster address")
    p.add_argument("--workers", type=positive_int, default=2,
                   help="Ray workers, each loading its own model (default 2)")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from mechreason.anchors.adaptive import AdaptiveConfig
    from mechreason.anchors.analysis import AnchorsConfig, analyze, load_traces
    from mechreason.anchors.receivers import ReceiverConfig
    from mechreason.anchors.resampling import ResampleConfig
    from mechreason.backends.base import check_ray_backend
    from mechreason.model.loading import load_model
    from mechreason.model.weights import DEFAULT_MODEL
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.traces.run import read_traces
    from mechreason.validate import check_device, check_model_name

    vllm = args.backend == "vllm"
    methods = args.methods or ("resample" if vllm else "resample,receivers,suppression")
    cfg = AnchorsConfig(
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        index=args.index, receiver_traces=args.receiver_traces,
        resample=ResampleConfig(rollouts=args.rollouts, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, forced=not args.no_forced,
                                seed=args.seed),
        receivers=ReceiverConfig(top_k=args.top_k, seed=args.seed),
        adaptive=AdaptiveConfig(tolerance=args.tolerance, batch=args.adaptive_batch,
                                min_rollouts=2 * args.adaptive_batch) if args.adaptive else None)
    check_model_name(args.model or DEFAULT_MODEL)
    check_device(args.device)
    check_out_dir(args.out)
    read_traces(args.traces)  # a missing, binary or malformed file fails before the model loads
    check_ray_backend(args.ray, args.backend)
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
        if vllm:
            from mechreason.backends.vllm_backend import VLLMBackend

            backend = stack.enter_context(VLLMBackend(model))
        runner = None
        if args.ray:
            from mechreason.scale.rollouts import RayRunner
            from mechreason.scale.workers import ModelSpec

            runner = RayRunner(args.ray, ModelSpec(model.name if args.model is None else args.model,
                                                   device=args.device or "cpu"),
                               workers=args.workers)
            stack.callback(runner.close)
        summary = analyze(model, traces, cfg, args.out, progress=True, backend=backend,
                          runner=runner)
    print(json.dumps({"out": args.out, **summary}, indent=1, default=str)[:4000])
    return 0
