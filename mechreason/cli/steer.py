"""``mechreason steer``: steer at chosen tokens and compare with unsteered and a control."""

from __future__ import annotations

import argparse
import logging

from mechreason.cli._args import (
    ALPHA_WARN,
    add_model_arg,
    alphas,
    difficulty,
    nonneg_int,
    positive_int,
    temperature,
)
from mechreason.cli._config import add_config, from_args
from mechreason.steering.experiment import SteerConfig

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "steer", help="steered vs unsteered generation on a task, with a random control",
        description="Generate the same problems unsteered, steered (a direction, or an SAE "
                    "latent added or clamped) at chosen positions for each alpha, and with "
                    "an equal-norm random direction / random latent as the control. Writes "
                    "unsteered.jsonl, steered.jsonl, control.jsonl (traces format; "
                    "steered_a{A}.jsonl for several alphas) and summary.json.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--vector", help="direction directory (direction.safetensors + .json)")
    src.add_argument("--sae", help="SAE folder (SAELens format); needs --latent")
    add_model_arg(p)
    p.add_argument("--alpha", type=alphas, default=SteerConfig.alphas,
                   help="coefficient, or a comma list for a sweep (finite, |alpha| <= 1e4)")
    add_config(p, SteerConfig, skip={"model", "vector", "sae", "alphas"},
               types={"latent": nonneg_int, "n": positive_int, "difficulty": difficulty,
                      "max_new_tokens": positive_int, "temperature": temperature,
                      "seed": nonneg_int, "batch_size": positive_int, "kl_texts": nonneg_int})
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _warn_large(alphas: tuple[float, ...], vector: str | None) -> None:
    """Coefficients past ALPHA_WARN usually swamp the residual stream: say by how much
    (a direction's recorded norm is the residual norm it was rescaled to)."""
    big = [a for a in alphas if abs(a) > ALPHA_WARN]
    if not big:
        return
    norm = None
    if vector is not None:

        from mechreason.artifacts import artifact_path, read_json

        side = artifact_path(vector, "direction_json")
        info = read_json(side, side.name) if side.is_file() else {}
        norms = info.get("norms") if isinstance(info, dict) else None
        norm = max(norms) if isinstance(norms, list) and norms else None
    added = f"a vector of norm {abs(big[0]) * norm:.3g}" if norm else "a large vector"
    log.warning("--alpha %g is above %g: it adds %s, while the residual stream's expected norm "
                "is about %s; outputs will likely degenerate", big[0], ALPHA_WARN, added,
                f"{norm:.3g}" if norm else "the direction's norm")


def run(args: argparse.Namespace) -> int:
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.steering.experiment import run_experiment
    from mechreason.validate import check_model_name

    check_model_name(args.model)
    check_out_dir(args.out)
    _warn_large(args.alpha, args.vector)
    if args.vector is not None:  # a missing, corrupt or degenerate direction fails first
        from mechreason.directions.io import direction_vector

        direction_vector(args.vector, hook=args.hook)
    else:
        from mechreason.sae.io import load_sae

        load_sae(args.sae)
    cfg = from_args(SteerConfig, args, alphas=args.alpha)
    with output_lock(args.out):
        rows = run_experiment(cfg, args.out, progress=not args.no_progress)
    print(f"{'arm':<16} {'alpha':>6} {'acc':>6} {'95% CI':>13} {'parse':>6} {'tokens':>7} "
          f"{'steps':>6} {'KL':>8}")
    for r in rows:
        lo, hi = r["accuracy_ci"]
        kl = f"{r['kl']:.4f}" if "kl" in r else "-"
        print(f"{r['arm']:<16} {r['alpha']:>6g} {r['accuracy']:>6.2f} [{lo:.2f}, {hi:.2f}] "
              f"{r['parse_rate']:>6.2f} {r['length_mean']:>7.1f} {r['steps_share']:>6.2f} "
              f"{kl:>8}")
    print(f"wrote {args.out}/summary.json")
    return 0
