"""He et al. 2026, reasoning as a latent mode: steer one SAE latent at the first
generated token only.

Paper (Llama-3.1-8B, GSM8K): rank SAE latents by their mean activation at the
first-token position under a CoT prompt minus under a direct prompt; adding the top
latent at that one position of direct prompts raises accuracy from 24.5% to 73.3%,
while a random latent gives 26%.

Here: :func:`mechreason.steering.evaluate.contrast_latents` ranks the latents on
discovery problems (and, as a check, on held-out ones); :class:`AddLatent` at
``positions="first"`` steers the top latent on held-out direct prompts at several
coefficients (in units of the latent's mean cot activation there), beside a random
latent at the same strength (:func:`random_latent`), with the unsteered direct and cot
prompts as references. The SAE is ``--sae``, a shipped one, or a small top-k SAE
trained in the script on cot-trace activations.

    python analyses/he_2026_first_token_steering.py --out analyses/results/he_2026_first_token_steering
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import _common as C

PAPER = {"model": "Llama-3.1-8B", "task": "GSM8K", "direct": 0.245, "steered": 0.733,
         "random_latent": 0.26, "source": "He et al. 2026"}


def sae_and_hook(args: Any, model: Any, disc: list[Any], out: Path) -> tuple[Any, str, str]:
    """The SAE, its hook, and where it came from (trains one on cot traces if needed)."""
    sae, source = C.existing_sae(args, model)
    if sae is not None:
        return sae, sae.cfg.hook, source
    hook = f"blocks.{args.layer if args.layer is not None else model.n_layers // 2}.hook_resid_post"
    C.traces(model, disc, out / "traces_cot.jsonl", style="cot", max_new_tokens=args.max_new_tokens)
    store = C.capture_traces(model, out / "traces_cot.jsonl", out / "acts", [hook])
    sae, source = C.train_small_sae(args, model, store, hook, out)
    return sae, hook, source


def arm_stats(recs: list[dict[str, Any]]) -> dict[str, Any]:
    from mechreason.steering.evaluate import reasons_in_steps

    n = len(recs)
    return {"accuracy": C.proportion(sum(r["correct"] is True for r in recs), n),
            "reasons_in_steps": C.proportion(sum(reasons_in_steps(r["generated_text"])
                                                 for r in recs), n),
            "tokens": C.mean([r["n_generated_tokens"] for r in recs])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = C.parser(__doc__ or "", n=30)
    ap.add_argument("--sae", help="SAE folder (default: shipped, else trained here)")
    ap.add_argument("--layer", type=int, help="layer when training an SAE (default: middle)")
    ap.add_argument("--coefs", type=float, nargs="+", default=[2.0, 8.0],
                    help="multiples of the latent's mean cot activation at the first token")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens, args.coefs = min(args.n, 4), 12, args.coefs[:1]
    from mechreason.model.generation import SamplingConfig
    from mechreason.steering import AddLatent
    from mechreason.steering.evaluate import (
        contrast_latents,
        latent_activation_at_first,
        random_latent,
        run_arm,
    )
    from mechreason.traces.prompts import render_prompt

    model, out = C.start(args)
    disc, held = C.problems(args), C.problems(args, offset=1)
    sae, hook, source = sae_and_hook(args, model, disc, out)
    n_lat = int(sae.W_dec.shape[0])
    ranked = contrast_latents(model, sae, disc, hook, top=10)
    latent = ranked[0][0]
    held_rank = [j for j, _ in contrast_latents(model, sae, held, hook, top=n_lat)].index(latent)
    control = random_latent(n_lat, latent, args.seed)
    cot_ids = [model.encode(render_prompt(model, p, "cot")) for p in disc]
    unit = float(latent_activation_at_first(model, sae, cot_ids, hook, latent).detach().float().mean())
    unit = unit if unit > 0 else 1.0
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, batch_size=8)

    def run(name: str, j: int | None, c: float, style: str = "direct") -> dict[str, Any]:
        ivs = [AddLatent(hook=hook, sae=sae, latent=j, alpha=c * unit, positions="first")] \
            if j is not None else None
        return arm_stats(run_arm(model, held, out / f"{name}.jsonl", style=style,
                                 sampling=sampling, interventions=ivs))

    arms = {"direct (unsteered)": run("direct", None, 0.0),
            "cot prompt (reference)": run("cot", None, 0.0, style="cot")}
    for c in args.coefs:
        arms[f"top latent x{c:g}"] = run(f"steered_c{c:g}", latent, c)
        arms[f"random latent x{c:g}"] = run(f"control_c{c:g}", control, c)
    best = max(args.coefs, key=lambda c: (arms[f"top latent x{c:g}"]["accuracy"]["value"],
                                          arms[f"top latent x{c:g}"]["reasons_in_steps"]["value"]))
    numbers = {"sae": source, "hook": hook, "latent": latent, "control_latent": control,
               "top_latents": ranked, "latent_rank_on_heldout": held_rank,
               "unit_activation": unit, "coefs": args.coefs, "arms": arms, "best_coef": best}
    figs = C.save_figure(args, lambda: _figure(arms, args.coefs), out, "dose_response")
    tab = ["| arm | accuracy | reasons in steps | tokens |", "|---|---|---|---|",
           *[f"| {k} | {C.fmt(v['accuracy'])} | {C.fmt(v['reasons_in_steps'])} | "
             f"{C.fmt(v['tokens'])} |" for k, v in arms.items()]]
    body = [f"SAE: {source}; hook `{hook}`. Top cot-minus-direct latents at the first-token "
            f"position (discovery, {len(disc)} problems): {ranked[:5]}.",
            f"The chosen latent {latent} ranks {held_rank + 1} of {n_lat} on {len(held)} "
            "held-out problems (1 = replicates).",
            f"Coefficient unit: the latent's mean activation there under the cot prompt "
            f"({unit:.3g}), so coefficients {args.coefs} add the latent at alpha "
            f"{[round(c * unit, 2) for c in args.coefs]}; control latent {control}.", "",
            "The best coefficient is the one with the highest steered accuracy, ties broken "
            "by the share reasoning in steps.", "",
            f"Held-out: {len(held)} problems, greedy, {args.max_new_tokens} new tokens.", "",
            *tab, "", f"Figure: {', '.join(figs) or 'skipped'}."]
    st = arms[f"top latent x{best:g}"]
    C.write_report(
        out, model, args, script="he_2026_first_token_steering.py",
        title="First-token latent steering (He et al. 2026)",
        citation="He et al. (2026). Reasoning as a latent mode: steering one SAE latent at "
                 "the first generated token.",
        rows=[("direct accuracy", "24.5%", arms["direct (unsteered)"]["accuracy"]),
              (f"steered accuracy (top latent, best coef x{best:g})", "73.3%", st["accuracy"]),
              (f"random latent, x{best:g} (control)", "26%",
               arms[f"random latent x{best:g}"]["accuracy"]),
              ("steered: share reasoning in steps", "-", st["reasons_in_steps"]),
              (f"random latent x{best:g}: share reasoning in steps (control)", "-",
               arms[f"random latent x{best:g}"]["reasons_in_steps"]),
              ("direct: share reasoning in steps", "-",
               arms["direct (unsteered)"]["reasons_in_steps"]),
              ("cot prompt accuracy (reference)", "-", arms["cot prompt (reference)"]["accuracy"])],
        why=[f"Model and SAE: a 135M model with a small SAE ({source}) vs Llama-3.1-8B with "
             "a large pretrained SAE; a small model's cot prompt barely beats direct, so there "
             "is little latent mode to switch on.",
             "Task: procedural arithmetic vs GSM8K.",
             "The best coefficient is picked on the same held-out problems it is reported "
             "on (optimistic); n is small and the intervals are wide."],
        body=body, numbers=numbers, paper=PAPER)
    return numbers


def _figure(arms: dict[str, Any], coefs: list[float]) -> Any:
    from mechreason.report.plots import dose_response

    x = [0.0, *coefs]
    base = arms["direct (unsteered)"]["accuracy"]

    def series(prefix: str) -> dict[str, list[float]]:
        pts = [base] + [arms[f"{prefix} x{c:g}"]["accuracy"] for c in coefs]
        return {"coefs": x, "mean": [p["value"] for p in pts], "lo": [p["lo"] for p in pts],
                "hi": [p["hi"] for p in pts]}

    s = series("top latent")
    return dose_response(x, s["mean"], s["lo"], s["hi"], control=series("random latent"),
                         metric="accuracy", title="First-token latent steering (direct prompts)")


if __name__ == "__main__":
    main(sys.argv[1:])
