"""Venhoff et al. 2025a, "Understanding Reasoning in Thinking Language Models via
Steering Vectors": one steering vector per reasoning behaviour, the mean residual over
sentence-start windows (tokens [start-1, start+10)) of sentences with that label
minus the mean over all sentences, rescaled to the overall mean's norm.

Paper (DeepSeek-R1-Distill models): adding a behaviour's vector raises the share of
sentences showing it (backtracking, uncertainty, example testing, adding knowledge)
and subtracting it lowers the share; the effect is shown per behaviour and layer in
figures, not as one headline number.

Here: cot traces of procedural arithmetic problems, sentences labelled by the rule
labeller (the Thought Anchors function tags that capture keeps), vectors from
:func:`mechreason.directions.label_vs_all` over ``sentence-start`` windows with a
held-out layer sweep (AUROC, random-direction control), then steering held-out
problems with +/- the best layer's vector at every generated token beside an
equal-norm random vector, measuring the label's share of sentences.

    python analyses/venhoff_2025a_label_directions.py --out analyses/results/venhoff_2025a
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import _common as C

PAPER = {"model": "DeepSeek-R1-Distill (Llama-8B, Qwen-1.5B/14B)",
         "finding": "+vector raises and -vector lowers the behaviour's sentence share",
         "source": "Venhoff et al. 2025a, section 5 and figures"}


def pick_labels(records: list[dict[str, Any]], want: str | None, k: int = 2) -> list[str]:
    """The ``k`` most frequent labels with at least two sentences (or ``want``)."""
    counts = Counter(t for r in records for s in r["sentences"] for t in s["labels"])
    if want:
        return [want]
    total = sum(len(r["sentences"]) for r in records)
    return [t for t, c in counts.most_common() if 2 <= c <= total - 2][:k]


def label_share(recs: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """Mean over traces of the share of sentences carrying ``label``."""
    fr = [sum(label in s["labels"] for s in r["sentences"]) / len(r["sentences"])
          for r in recs if r["sentences"]]
    return C.mean(fr or [0.0])


def fluency(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Sentences per trace and distinct-token share (unique / generated tokens): a steer
    that degenerates the text (``1000000...``) shows as few sentences, a low share."""
    uniq = [len(set(r["generated_ids"])) / max(len(r["generated_ids"]), 1) for r in recs]
    return {"sentences": C.mean([len(r["sentences"]) for r in recs]),
            "distinct_tokens": C.mean(uniq)}


def eval_auroc(model: Any, out: Any, lab: str, hook: str, vec: Any, seed: int) -> dict[str, Any]:
    """The chosen vector's separation of ``lab`` sentences from the rest on the unsteered
    eval traces (problems never used to choose the label, layer or vector), beside an
    equal-norm random direction; an error text when those traces lack the label."""
    from mechreason.directions.contrast import build_contrast
    from mechreason.directions.sweep import auroc, auroc_ci
    from mechreason.errors import MechReasonError
    from mechreason.steering.evaluate import random_like

    try:
        store = C.capture_traces(model, out / "eval_unsteered.jsonl", out / "acts_eval", [hook],
                                 positions="generated")
        a, b = build_contrast([store], f"label={lab}", "sentence-start").groups(hook)
    except MechReasonError as e:
        return {"error": f"not computed: {e}"}
    res = {}
    for name, v in (("direction", vec), ("random", random_like(vec, seed))):
        u = v.float() / v.float().norm()
        lo, hi = auroc_ci(a.x @ u, b.x @ u, seed=seed)
        res[name] = {"value": auroc(a.x @ u, b.x @ u), "lo": lo, "hi": hi}
    return res | {"n_sentences": [len(a.ids), len(b.ids)]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = C.parser(__doc__ or "", n=30)
    ap.add_argument("--label", help="function tag to study (default: the two most common)")
    ap.add_argument("--alpha", type=float, default=0.1,
                    help="steering coefficient (x the mean activation norm; 0.5 breaks the text)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens = min(args.n, 4), 16
    from mechreason.directions.contrast import build_contrast
    from mechreason.directions.methods import label_vs_all
    from mechreason.directions.sweep import layer_sweep
    from mechreason.errors import MechReasonError
    from mechreason.steering import Add
    from mechreason.steering.engine import steer
    from mechreason.steering.evaluate import random_like

    model, out = C.start(args)
    scripted = args.model == "tiny-random"  # random weights write no sentences to label
    sp = C.split(args)
    recs = C.traces(model, sp.tune, out / "traces_cot.jsonl", style="cot",
                    max_new_tokens=args.max_new_tokens, scripted=scripted)
    layers = sorted({*range(0, model.n_layers, max(1, model.n_layers // 8)), model.n_layers - 1})
    hooks = [f"blocks.{L}.hook_resid_post" for L in layers]
    store = C.capture_traces(model, out / "traces_cot.jsonl", out / "acts", hooks,
                             positions="generated")
    labels = pick_labels(recs, args.label)
    if not labels:
        raise MechReasonError("no label has at least two sentences (and two without it); "
                              "raise --n or --max-new-tokens")
    per_label = {}
    for lab in labels:
        cs = build_contrast([store], f"label={lab}", "sentence-start")
        res = layer_sweep(label_vs_all, [(h, *cs.groups(h)) for h in hooks], seed=args.seed)
        per_label[lab] = {
            "counts": cs.counts(), "best_hook": hooks[res.best],
            "layers": [{"hook": r.hook, "auroc": r.sep.auroc, "auroc_ci": [r.sep.auroc_lo,
                        r.sep.auroc_hi], "random_auroc": r.random_auroc, "norm": r.norm}
                       for r in res.layers],
            "vector": res.directions[res.best]}
    lab = labels[0]
    best = per_label[lab]
    vec, hook = best["vector"], best["best_hook"]
    held = sp.eval
    # scripted on tiny-random only, so a quick run reaches the eval AUROC below
    arms: dict[str, Any] = {"unsteered": C.traces(model, held, out / "eval_unsteered.jsonl",
                                                  style="cot", max_new_tokens=args.max_new_tokens,
                                                  scripted=scripted)}
    for name, file, v, a in (("+vector", "plus", vec, args.alpha),
                             ("-vector", "minus", vec, -args.alpha),
                             ("+random (control)", "random", random_like(vec, args.seed), args.alpha),
                             ("-random (control)", "random_minus", random_like(vec, args.seed),
                              -args.alpha)):
        with steer(model, Add(hook=hook, vector=v, alpha=a, positions="generated")):
            # the file name carries the settings, so a re-run with another label or alpha
            # in the same --out generates its own arms instead of reusing these
            path = out / f"eval_{lab}_{hook.split('.')[1]}_a{args.alpha:g}_{file}.jsonl"
            arms[name] = C.traces(model, held, path, style="cot",
                                  max_new_tokens=args.max_new_tokens)
    shares = {k: label_share(v, lab) for k, v in arms.items()}
    ev_auroc = eval_auroc(model, out, lab, hook, vec, args.seed)
    for d in per_label.values():
        d.pop("vector")
    numbers = {"labels": per_label, "steered_label": lab, "steer_hook": hook,
               "alpha": args.alpha, "vector_norm": float(vec.norm()), "label_share": shares,
               "accuracy": {k: C.proportion(sum(r["correct"] is True for r in v), len(v))
                            for k, v in arms.items()},
               "fluency": {k: fluency(v) for k, v in arms.items()},
               "eval_auroc": ev_auroc}
    lay = per_label[lab]["layers"]
    figs = C.save_figure(args, lambda: _figure(layers, lay, hooks.index(hook), lab), out,
                         "layer_sweep")
    body = []
    for name, d in per_label.items():
        body += [f"### label `{name}`", "", f"units: {d['counts']}; best hook `{d['best_hook']}`",
                 "", "| hook | AUROC (tune traces, held-out problems) | random direction AUROC | norm |", "|---|---|---|---|",
                 *[f"| {r['hook']} | {r['auroc']:.3f} [{r['auroc_ci'][0]:.3f}, {r['auroc_ci'][1]:.3f}]"
                   f" | {r['random_auroc']:.3f} | {r['norm']:.3g} |" for r in d["layers"]], ""]
    body += [f"Steering `{lab}` at `{hook}`, alpha {args.alpha}, every generated token, "
             f"{len(held)} held-out problems:", "",
             "| arm | label share | accuracy | sentences / trace | distinct-token share |",
             "|---|---|---|---|---|",
             *[f"| {k} | {C.fmt(shares[k])} | {C.fmt(numbers['accuracy'][k])} | "
               f"{C.fmt(numbers['fluency'][k]['sentences'])} | "
               f"{C.fmt(numbers['fluency'][k]['distinct_tokens'])} |" for k in arms], "",
             "A label share counts only as a behaviour change where the text stays fluent "
             "(sentences and distinct tokens near the unsteered arm).", "",
             f"Figure: {', '.join(figs) or 'skipped'}."]
    bl = next(r for r in lay if r["hook"] == hook)
    C.write_report(
        out, model, args, script="venhoff_2025a_label_directions.py",
        title="Label directions at sentence starts (Venhoff et al. 2025a)",
        citation="Venhoff, C., Arcuschin, I., Torr, P., Conmy, A. and Nanda, N. (2025). "
                 "Understanding Reasoning in Thinking Language Models via Steering Vectors.",
        rows=[(f"`{lab}` AUROC on eval traces (chosen layer and vector)",
               "not reported (vectors steer)", ev_auroc.get("direction", ev_auroc.get("error"))),
              ("equal-norm random direction AUROC on eval traces (control)", "-",
               ev_auroc.get("random", "-")),
              (f"`{lab}` AUROC at the chosen layer on tune's held-out split (chose the layer)",
               "-", {"value": bl["auroc"], "lo": bl["auroc_ci"][0], "hi": bl["auroc_ci"][1]}),
              (f"`{lab}` share, unsteered", "-", shares["unsteered"]),
              (f"`{lab}` share, +vector", "rises", shares["+vector"]),
              (f"`{lab}` share, -vector", "falls", shares["-vector"]),
              (f"`{lab}` share, +random (control)", "-", shares["+random (control)"]),
              (f"`{lab}` share, -random (control)", "-", shares["-random (control)"])],
        why=["Labels: rule-based function tags of short arithmetic traces instead of an "
             "LLM judge's behaviour labels on long thinking traces; a 135M model seldom "
             "backtracks, so the studied label is the most frequent tag, not backtracking.",
             "Model: a 135M instruct model vs 1.5B-14B distilled reasoning models.",
             "Scale: a few dozen traces and one coefficient; the paper sweeps layers and "
             "strengths on hundreds of traces. Intervals are wide.",
             "Specificity: the vector is rescaled to the mean activation norm (Venhoff's "
             "convention) and added at every generated token, so a random vector of the same "
             "norm also perturbs the text strongly; an effect counts only where the +/-vector "
             "arm leaves the matching +/-random arm's interval."],
        body=body, numbers=numbers, paper=PAPER, split=sp,
        chosen={"label": lab, "layer": f"{hook} (max AUROC on the tune traces' held-out "
                f"problems: {bl['auroc']:.3f})", "vector": "label mean minus all, tune traces",
                "alpha": f"{args.alpha} (fixed)"})
    return numbers


def _figure(layers: list[int], lay: list[dict[str, Any]], best: int, lab: str) -> Any:
    from mechreason.report.plots import layer_sweep

    return layer_sweep(layers, {"held-out AUROC": [r["auroc"] for r in lay],
                                "random direction": [r["random_auroc"] for r in lay]},
                       best_layer=layers[best], title=f"label-vs-all direction for `{lab}`")


if __name__ == "__main__":
    main(sys.argv[1:])
