"""He et al. 2026, reasoning as a latent mode: steer one SAE latent at the first
generated token only.

Paper (Llama-3.1-8B, GSM8K): rank SAE latents by their mean activation at the
first-token position under a CoT prompt minus under a direct prompt; adding the top
latent at that one position of direct prompts raises accuracy from 24.5% to 73.3%,
while a random latent gives 26%.

Here, pre-registered, per seed: on the **tune** problems only,
:func:`mechreason.steering.evaluate.contrast_latents` picks the latent, its mean cot
activation there sets the coefficient unit, and the coefficient is chosen from the grid
``--coefs`` by the steered arm's (accuracy, share reasoning in steps) on tune direct
prompts. On the **eval** problems, never seen while choosing, only the chosen setting
runs: :class:`AddLatent` at ``positions="first"`` on direct prompts, beside the unsteered
direct prompt, a random latent at the same alpha (equal norm: the SAE's decoder rows are
checked to have one norm, else the control's alpha is rescaled). Each comparison carries the difference with its interval and Fisher's exact
p; seeds are reported one by one and pooled. The SAE is ``--sae``, a shipped one, or a
small top-k SAE trained in the script on tune cot traces.

    python analyses/he_2026_first_token_steering.py --seeds 0 1 --tune 0-20 --eval 20-50 \
        --coefs 2 8 48 --out analyses/results/he_2026_first_token_steering
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import _common as C

PAPER = {"model": "Llama-3.1-8B", "task": "GSM8K", "direct": 0.245, "steered": 0.733,
         "random_latent": 0.26, "source": "He et al. 2026"}
METRICS = ("accuracy", "reasons_in_steps")


def sae_and_hook(args: Any, model: Any, tune: list[Any], out: Path) -> tuple[Any, str, str]:
    """The SAE, its hook, and where it came from (trains one on tune cot traces if needed)."""
    sae, source = C.existing_sae(args, model)
    if sae is not None:
        return sae, sae.cfg.hook, source
    hook = f"blocks.{args.layer if args.layer is not None else model.n_layers // 2}.hook_resid_post"
    C.traces(model, tune, out / "traces_cot.jsonl", style="cot", max_new_tokens=args.max_new_tokens)
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


class _Arms:
    """Runs arms on one problem set into one folder (resumable by file name)."""

    def __init__(self, model: Any, sae: Any, hook: str, problems: list[Any], folder: Path,
                 max_new_tokens: int) -> None:
        from mechreason.model.generation import SamplingConfig

        self.model, self.sae, self.hook, self.problems, self.folder = model, sae, hook, problems, folder
        self.sampling = SamplingConfig(max_new_tokens=max_new_tokens, batch_size=8)
        folder.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, latent: int | None = None, alpha: float = 0.0,
            style: str = "direct") -> dict[str, Any]:
        from mechreason.steering import AddLatent
        from mechreason.steering.evaluate import run_arm

        ivs = None if latent is None else [AddLatent(hook=self.hook, sae=self.sae, latent=latent,
                                                     alpha=alpha, positions="first")]
        return arm_stats(run_arm(self.model, self.problems, self.folder / f"{name}.jsonl",
                                 style=style, sampling=self.sampling, interventions=ivs))


def choose_coef(tune_arms: dict[str, Any], coefs: list[float]) -> float:
    """The pre-registered rule: the highest steered (accuracy, share reasoning in steps)
    on the tune problems; ties to the smaller coefficient."""
    def key(c: float) -> tuple[float, float, float]:
        a = tune_arms[f"top latent x{c:g}"]
        return (a["accuracy"]["value"], a["reasons_in_steps"]["value"], -c)

    return max(coefs, key=key)


def run_seed(args: argparse.Namespace, model: Any, sae: Any, hook: str, sp: C.Split,
             seed: int, out: Path) -> dict[str, Any]:
    """Choose latent, unit and coefficient on ``sp.tune``; report them on ``sp.eval``."""
    from mechreason.steering.evaluate import (
        contrast_latents,
        latent_activation_at_first,
        random_latent,
    )
    from mechreason.traces.prompts import render_prompt

    n_lat = int(sae.W_dec.shape[0])
    ranked = contrast_latents(model, sae, sp.tune, hook, top=10)
    latent = ranked[0][0]
    eval_rank = [j for j, _ in contrast_latents(model, sae, sp.eval, hook, top=n_lat)].index(latent)
    control = random_latent(n_lat, latent, seed)
    cot_ids = [model.encode(render_prompt(model, p, "cot")) for p in sp.tune]
    unit = float(latent_activation_at_first(model, sae, cot_ids, hook, latent).detach().float().mean())
    unit = unit if unit > 0 else 1.0
    norms = [float(sae.W_dec[j].float().norm()) for j in (latent, control)]
    ctrl_scale = norms[0] / norms[1]  # equal-norm control: 1.0 when decoder rows share a norm

    tune = _Arms(model, sae, hook, sp.tune, out / f"seed{seed}" / "tune", args.max_new_tokens)
    tune_arms = {"direct (unsteered)": tune.run("direct")}
    for c in args.coefs:
        # file names carry latent and alpha: a re-run that chooses otherwise regenerates
        tune_arms[f"top latent x{c:g}"] = tune.run(f"steered_l{latent}_a{c * unit:.6g}", latent,
                                                   c * unit)
    best = choose_coef(tune_arms, args.coefs)

    ev = _Arms(model, sae, hook, sp.eval, out / f"seed{seed}" / "eval", args.max_new_tokens)
    arms = {"direct (unsteered)": ev.run("direct"),
            "top latent (chosen coef)": ev.run(f"steered_l{latent}_a{best * unit:.6g}", latent,
                                               best * unit),
            "random latent (same alpha, equal norm)": ev.run(
                f"control_l{control}_a{best * unit * ctrl_scale:.6g}", control,
                best * unit * ctrl_scale)}
    return {"latent": latent, "top_latents_on_tune": ranked, "latent_rank_on_eval": eval_rank,
            "control_latent": control, "decoder_norms": norms, "control_alpha_scale": ctrl_scale,
            "unit_activation": unit, "chosen_coef": best, "alpha": best * unit,
            "tune_arms": tune_arms, "eval_arms": arms, "tests": tests(arms)}


def tests(arms: dict[str, Any]) -> dict[str, Any]:
    """Steered vs unsteered and vs the random latent, per metric: difference, interval, p."""
    st = arms["top latent (chosen coef)"]
    return {f"{m}: steered vs {ref}": C.compare(st[m], arms[key][m])
            for m in METRICS for ref, key in (("unsteered", "direct (unsteered)"),
                                              ("random latent", "random latent (same alpha, equal norm)"))}


def pooled(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Eval counts summed over seeds (each seed its own problems and choices)."""
    names = next(iter(per_seed.values()))["eval_arms"]
    arms = {name: {m: C.proportion(sum(s["eval_arms"][name][m]["k"] for s in per_seed.values()),
                                   sum(s["eval_arms"][name][m]["n"] for s in per_seed.values()))
                   for m in METRICS} for name in names}
    return {"eval_arms": arms, "tests": tests(arms)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = C.parser(__doc__ or "", n=30, seeds=True)
    ap.add_argument("--sae", help="SAE folder (default: shipped, else trained here)")
    ap.add_argument("--layer", type=int, help="layer when training an SAE (default: middle)")
    ap.add_argument("--coefs", type=float, nargs="+", default=[2.0, 8.0, 48.0],
                    help="grid of multiples of the latent's mean cot activation at the first "
                         "token (chosen on tune)")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens, args.coefs = min(args.n, 4), 12, args.coefs[:2]
    model, out = C.start(args)
    splits = {str(s): C.split(args, s) for s in args.seeds}
    first = splits[str(args.seeds[0])]
    sae, hook, source = sae_and_hook(args, model, first.tune, out)
    per_seed = {s: run_seed(args, model, sae, hook, splits[str(s)], s, out)
                for s in args.seeds}
    pool = pooled(per_seed)
    numbers = {"sae": source, "hook": hook, "coefs": args.coefs, "primary_metric": "reasons_in_steps",
               "seeds": {str(s): v for s, v in per_seed.items()}, "pooled": pool}
    chosen = {f"seed {s}": _chosen_text(v) for s, v in per_seed.items()}
    figs = C.save_figure(args, lambda: _figure(per_seed, args.coefs), out, "tune_dose_response")
    pa, pt = pool["eval_arms"], pool["tests"]
    rows = [("direct accuracy", "24.5%", pa["direct (unsteered)"]["accuracy"]),
            ("steered accuracy (chosen on tune)", "73.3%", pa["top latent (chosen coef)"]["accuracy"]),
            ("random latent accuracy (control)", "26%",
             pa["random latent (same alpha, equal norm)"]["accuracy"]),
            ("direct: share reasoning in steps", "-", pa["direct (unsteered)"]["reasons_in_steps"]),
            ("steered: share reasoning in steps", "-",
             pa["top latent (chosen coef)"]["reasons_in_steps"]),
            ("random latent: share reasoning in steps", "-",
             pa["random latent (same alpha, equal norm)"]["reasons_in_steps"]),
            *[(f"{k} (difference; Fisher p {v['fisher_p']:.3g})", "-", v) for k, v in pt.items()]]
    C.write_report(
        out, model, args, script="he_2026_first_token_steering.py",
        title="First-token latent steering (He et al. 2026), pre-registered",
        citation="He et al. (2026). Reasoning as a latent mode: steering one SAE latent at "
                 "the first generated token.",
        rows=rows,
        why=[f"Model and SAE: a 135M model with a small SAE ({source}) vs Llama-3.1-8B with "
             "a large pretrained SAE; a small model's cot prompt barely beats direct, so there "
             "is little latent mode to switch on.",
             "Task: procedural arithmetic vs GSM8K; the model is at floor on accuracy, so the "
             "primary endpoint here is the share of answers that reason in steps.",
             "Pooled over seeds: eval counts summed (each seed its own tune and eval problems "
             "and its own choices); per-seed numbers below."],
        body=_body(args, per_seed, pool, source, hook, figs), numbers=numbers, paper=PAPER,
        split=splits, chosen=chosen)
    return numbers


def _chosen_text(v: dict[str, Any]) -> str:
    tuned = v["tune_arms"][f"top latent x{v['chosen_coef']:g}"]["reasons_in_steps"]["value"]
    return (f"latent {v['latent']} (rank 1 on tune), coef x{v['chosen_coef']:g} "
            f"(alpha {v['alpha']:.3g}; steered steps share on tune {C.fmt(tuned)})")


def _arm_table(arms: dict[str, Any]) -> list[str]:
    return ["| arm | accuracy | reasons in steps | tokens |", "|---|---|---|---|",
            *[f"| {k} | {C.fmt(v['accuracy'])} | {C.fmt(v['reasons_in_steps'])} | "
              f"{C.fmt(v.get('tokens', '-'))} |" for k, v in arms.items()]]


def _test_table(tests_: dict[str, Any]) -> list[str]:
    return ["| comparison | counts | difference [95% CI] | Fisher exact p (two-sided) |",
            "|---|---|---|---|",
            *[f"| {k} | {v['a']} vs {v['b']} | {C.fmt({x: v[x] for x in ('value', 'lo', 'hi')})} "
              f"| {v['fisher_p']:.3g} |" for k, v in tests_.items()]]


def _body(args: argparse.Namespace, per_seed: dict[int, dict[str, Any]], pool: dict[str, Any],
          source: str, hook: str, figs: list[str]) -> list[str]:
    lines = [f"SAE: {source}; hook `{hook}`. Coefficient grid {args.coefs} (multiples of the "
             "chosen latent's mean activation at the first-token position under the cot prompt, "
             "on tune); rule: the highest steered (accuracy, share reasoning in steps) on tune "
             f"direct prompts, ties to the smaller coefficient. Greedy, {args.max_new_tokens} new "
             "tokens. The control latent gets the same alpha times the ratio of the two decoder "
             "rows' norms (1 when the rows share a norm), so it adds a vector of equal norm.", "",
             "## Pooled over seeds (eval)", "", *_arm_table(pool["eval_arms"]), "",
             *_test_table(pool["tests"]), ""]
    for s, v in per_seed.items():
        lines += [f"## Seed {s}", "",
                  f"Latent {v['latent']} (top on tune: {[(j, round(x, 3)) for j, x in v['top_latents_on_tune'][:5]]}); "
                  f"it ranks {v['latent_rank_on_eval'] + 1} on the eval problems (a check, not "
                  f"a choice). Unit {v['unit_activation']:.3g}; chosen coef x{v['chosen_coef']:g} "
                  f"(alpha {v['alpha']:.3g}); control latent {v['control_latent']} (decoder norms "
                  f"{[round(x, 4) for x in v['decoder_norms']]}).", "",
                  "Tune (choosing the coefficient):", "", *_arm_table(v["tune_arms"]), "",
                  "Eval (the chosen setting only):", "", *_arm_table(v["eval_arms"]), "",
                  *_test_table(v["tests"]), ""]
    return [*lines, f"Figure (tune dose-response, seed {next(iter(per_seed))}): {', '.join(figs) or 'skipped'}."]


def _figure(per_seed: dict[int, dict[str, Any]], coefs: list[float]) -> Any:
    from mechreason.report.plots import dose_response

    s = next(iter(per_seed.values()))
    pts = [s["tune_arms"]["direct (unsteered)"]["reasons_in_steps"]] + \
        [s["tune_arms"][f"top latent x{c:g}"]["reasons_in_steps"] for c in coefs]
    return dose_response([0.0, *coefs], [p["value"] for p in pts], [p["lo"] for p in pts],
                         [p["hi"] for p in pts], metric="share reasoning in steps (tune)",
                         title="First-token latent steering, tune problems (choosing the coefficient)")


if __name__ == "__main__":
    main(sys.argv[1:])
