"""The He et al. (2026) experiment at small scale: steer direct-style prompts at the
first generated token only, with (a) the cot-minus-direct direction, (b) the top
contrast-scored SAE latent (when an SAE is given), and equal-norm random controls,
over a few coefficients; report accuracy, length and the share of responses that
reason in steps with intervals.

``python -m mechreason.steering.he_experiment --out DIR [--sae FOLDER]``. The direction
is the mean resid_post at the position that emits the first generated token under
``cot`` prompts minus under ``direct`` prompts, on problems disjoint from the
evaluation problems; it is saved as a direction directory and run through
:func:`mechreason.steering.experiment.run_experiment` (the ``mechreason steer`` code).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mechreason.steering.he_experiment")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--n-direction", type=int, default=40)
    p.add_argument("--alphas", default="1,2,4")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--sae", default=None, help="SAE folder for arm (b)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from mechreason.directions.io import DirectionSet, save_direction
    from mechreason.model.loading import hook_name, load_model
    from mechreason.steering.evaluate import contrast_latents, first_token_contrast
    from mechreason.steering.experiment import SteerConfig, run_experiment
    from mechreason.traces.tasks import make_problems

    out = Path(args.out)
    hook = hook_name(args.layer)
    model = load_model(args.model)
    fit = make_problems("arithmetic", args.n_direction, seed=101)  # disjoint from seed 0
    vec = first_token_contrast(model, fit, hook)
    ddir = save_direction(out / "direction", DirectionSet(
        vectors=vec[None], hooks=[hook], method="mean-diff", contrast="style=cot:direct",
        aggregate="first-generated (last prompt token)", best_hook=hook, model=model.name),
        model=model)
    alphas = tuple(float(a) for a in args.alphas.split(","))
    common = dict(model=args.model, alphas=alphas, positions="first", task="arithmetic",
                  n=args.n, style="direct", max_new_tokens=args.max_new_tokens, seed=0,
                  batch_size=args.n)
    report = {"direction_norm": float(vec.norm()), "hook": hook}
    report["direction"] = run_experiment(SteerConfig(vector=str(ddir), **common),  # type: ignore[arg-type]
                                         out / "direction_arm")
    if args.sae:
        from mechreason.sae.io import load_sae

        sae = load_sae(args.sae, model=model, hook=hook)
        ranked = contrast_latents(model, sae, fit, hook)
        latent = ranked[0][0]
        report["latent_ranking"] = ranked
        # scale so alpha * |W_dec[j]| equals alpha * |direction|: norm-matched arms
        scale = float(vec.norm() / (sae.W_dec[latent].norm() / getattr(sae, "norm_scale", 1.0)))
        report["latent_scale"] = scale
        report["latent"] = run_experiment(SteerConfig(
            sae=args.sae, latent=latent, mode="add", hook=hook,
            **{**common, "alphas": tuple(a * scale for a in alphas)}),  # type: ignore[arg-type]
            out / "latent_arm")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
