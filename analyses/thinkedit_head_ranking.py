"""ThinkEdit (Sun et al. 2025, "ThinkEdit: Interpretable Weight Editing to Mitigate
Overly Short Thinking in Reasoning Models"): the short-minus-long reasoning direction,
the attention heads that write along it, and the edit that projects it out of their
output weights.

Paper (DeepSeek-R1-Distill models, arXiv v4 abstract): editing about 4% of heads (0.2%
of parameters) raises accuracy on short-reasoning cases by +6.39% and overall by +3.34%
across math benchmarks (v1: ~2% of heads, +5.44% and +2.43%).

Here: cot traces of procedural arithmetic problems; the length terciles (short vs long
generated tokens) of ``mechreason.directions`` give the mean-difference direction of the
reasoning-span residual at every layer; :func:`mechreason.methods.head_edit.rank_heads`
ranks heads by their mean write along it over the reasoning spans; the top heads are
edited with :func:`edit_heads` and the model re-answers held-out problems, beside a
control that edits as many random heads. Reports length and accuracy per arm with
intervals, the paired length change, and the edited heads' residual write (should be 0).

    python analyses/thinkedit_head_ranking.py --out analyses/results/thinkedit_head_ranking
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import _common as C

PAPER = {"heads_edited_frac": 0.04, "short_case_accuracy_gain": 0.0639,
         "overall_accuracy_gain": 0.0334, "source": "Sun et al. 2025, arXiv:2503.22048v4 abstract"}


def direction(model: Any, records: list[dict[str, Any]], out: Path) -> tuple[Any, dict[str, Any]]:
    """(n_layers, d) short-minus-long reasoning-mean direction and the contrast's counts."""
    import torch

    from mechreason.directions import build_contrast, mean_diff
    from mechreason.errors import MechReasonError

    hooks = [f"blocks.{L}.hook_resid_post" for L in range(model.n_layers)]
    store = C.capture_traces(model, C.write_records(out / "train_traces.jsonl", records),
                             out / "acts", hooks, positions="generated")
    try:
        cs = build_contrast([store], "length=short:long", "reasoning-mean")
        spec = "length terciles (short vs long)"
    except MechReasonError:  # degenerate terciles (e.g. every trace hit the length cap)
        cs = build_contrast([store], "length_half=short:long", "reasoning-mean")
        spec = "median split of lengths (terciles were degenerate)"
    vecs = torch.stack([mean_diff(*cs.groups(h)) for h in hooks])
    return vecs, {"split": spec, **cs.counts()}


def add_halves(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tag each record short/long by a median split of its length (the fallback split)."""
    order = sorted(range(len(records)), key=lambda i: (records[i]["n_generated_tokens"], i))
    half = {i: ("short" if r < len(order) // 2 else "long") for r, i in enumerate(order)}
    return [dict(rec, length_half=half[i]) for i, rec in enumerate(records)]


def reasoning_spans(records: list[dict[str, Any]]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    """Full token ids and the reasoning span (first generated token to the answer)."""
    ids, spans = [], []
    for r in records:
        full = list(r["prompt_ids"]) + list(r["generated_ids"])
        p, a = r["prompt_len"], r.get("answer_tok_start") or len(full)
        if len(full) > p:
            ids.append(full)
            spans.append((p, max(min(a, len(full)), p + 1)))
    return ids, spans


def arm(model: Any, probs: list[Any], path: Path, max_new_tokens: int) -> list[dict[str, Any]]:
    return C.traces(model, probs, path, style="cot", max_new_tokens=max_new_tokens)


def summary(recs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"accuracy": C.proportion(sum(r["correct"] is True for r in recs), len(recs)),
            "tokens": C.mean([r["n_generated_tokens"] for r in recs])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = C.parser(__doc__ or "", n=30)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--head-frac", type=float, default=0.04, help="share of heads to edit")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens = min(args.n, 4), 12

    from mechreason.methods.head_edit import edit_heads, rank_heads

    model, out = C.start(args)
    sp = C.split(args)
    train = C.traces(model, sp.tune, out / "traces_cot.jsonl", style="cot",
                     max_new_tokens=args.max_new_tokens)
    vec, counts = direction(model, add_halves(train), out)
    ids, spans = reasoning_spans(train)
    ranked = rank_heads(model, ids, vec, spans=spans)
    n_heads = model.n_layers * model.n_heads
    k = max(1, round(args.head_frac * n_heads))
    top = [(h.layer, h.head) for h in ranked[:k]]
    rnd = random.Random(args.seed).sample([(h.layer, h.head) for h in ranked], k)
    held = sp.eval
    arms = {"unedited": arm(model, held, out / "eval_unedited.jsonl", args.max_new_tokens)}
    with edit_heads(model, top, vec):
        arms["top heads edited"] = arm(model, held, out / "eval_top.jsonl", args.max_new_tokens)
        after = rank_heads(model, ids, vec, spans=spans)
    with edit_heads(model, rnd, vec):
        arms["random heads edited (control)"] = arm(model, held, out / "eval_random.jsonl",
                                                    args.max_new_tokens)
    residual = max(abs(h.score) for h in after if (h.layer, h.head) in set(top))
    base_len = [r["n_generated_tokens"] for r in arms["unedited"]]
    paired = {name: C.bootstrap([a["n_generated_tokens"] - b for a, b in zip(recs, base_len)],
                                lambda xs: sum(xs) / len(xs), seed=args.seed)
              for name, recs in arms.items() if name != "unedited"}
    base_ok = [int(r["correct"] is True) for r in arms["unedited"]]
    acc_change = {name: C.bootstrap([int(a["correct"] is True) - b for a, b in zip(recs, base_ok)],
                                    lambda xs: sum(xs) / len(xs), seed=args.seed)
                  for name, recs in arms.items() if name != "unedited"}
    per_arm = {name: summary(recs) for name, recs in arms.items()}
    numbers = {"arms": per_arm, "length_change_vs_unedited": paired,
               "accuracy_change_vs_unedited": acc_change,
               "capped_share_unedited": C.proportion(
                   sum(r["n_generated_tokens"] >= args.max_new_tokens for r in arms["unedited"]),
                   len(held)),
               "heads_edited": k, "heads_total": n_heads, "top_heads": top, "random_heads": rnd,
               "top_scores": [h.score for h in ranked[:k]],
               "max_abs_write_of_edited_heads_after_edit": residual,
               "max_abs_write_before": max(abs(h.score) for h in ranked[:k]),
               "contrast": counts}
    grid = [[0.0] * model.n_heads for _ in range(model.n_layers)]
    for h in ranked:
        grid[h.layer][h.head] = h.score
    figs = C.save_figure(args, lambda: _figure(grid, top), out, "head_scores")
    tab = ["| arm | accuracy | mean generated tokens | tokens minus unedited (paired) |",
           "|---|---|---|---|"]
    for name, s in per_arm.items():
        tab.append(f"| {name} | {C.fmt(s['accuracy'])} | {C.fmt(s['tokens'])} | "
                   f"{C.fmt(paired[name]) if name in paired else '-'} |")
    body = [f"Direction: {counts['split']}, reasoning-span mean of `hook_resid_post` per layer "
            f"(short-minus-long; groups {counts['A']} short / {counts['B']} long traces).",
            f"Heads edited: {k} of {n_heads} ({k / n_heads:.1%}); top: {top[:8]}.", "",
            f"Edited heads' largest write along the direction: {C.fmt(numbers['max_abs_write_before'])} "
            f"before, {C.fmt(residual)} after the edit (the projection removes it).", "",
            f"Evaluation: {len(held)} held-out problems, cot style, greedy, "
            f"{args.max_new_tokens} new tokens.", "", *tab, "",
            f"Figure: {', '.join(figs) or 'skipped'} (each head's mean write, edited heads marked)."]
    top_arm, ctrl = per_arm["top heads edited"], per_arm["random heads edited (control)"]
    C.write_report(
        out, model, args, script="thinkedit_head_ranking.py",
        title="ThinkEdit head ranking and edit (Sun et al. 2025)",
        citation="Sun, C.-E., Yan, G. and Weng, T.-W. (2025). ThinkEdit: Interpretable Weight "
                 "Editing to Mitigate Overly Short Thinking in Reasoning Models.",
        rows=[("share of heads edited", "~4%", k / n_heads),
              ("accuracy change, top heads edited (paired)", "+3.34 points",
               acc_change["top heads edited"]),
              ("accuracy change, random heads (control, paired)", "not reported",
               acc_change["random heads edited (control)"]),
              ("length change, top heads edited (tokens)", "longer short answers",
               paired["top heads edited"]),
              ("length change, random heads (control)", "not reported",
               paired["random heads edited (control)"]),
              ("accuracy, top heads edited", "-", top_arm["accuracy"]),
              ("accuracy, random heads edited", "-", ctrl["accuracy"])],
        why=["Model: a 135M instruct model with short answers, not a distilled reasoning "
             "model whose thinking ranges from tens to thousands of tokens; 'short' and 'long' "
             f"here are the {counts['split']} under a {args.max_new_tokens}-token cap, which "
             f"{C.fmt(numbers['capped_share_unedited'])} of the unedited answers reach.",
             "The direction comes from a few dozen traces; the paper uses thousands.",
             "Task: procedural arithmetic instead of GSM8K/MATH; the paper's +6.39% is on "
             "short-reasoning cases only, a subset too small to measure at this n.",
             "Intervals are wide at this n; a difference inside them is no effect."],
        body=body, numbers=numbers, paper=PAPER, split=sp,
        chosen={"direction": "short-minus-long reasoning-span mean of tune cot traces",
                "edited heads": f"top {k} of {n_heads} by write along it on tune traces: {top[:8]}"})
    return numbers


def _figure(grid: list[list[float]], top: list[tuple[int, int]]) -> Any:
    from mechreason.report.plots import receiver_kurtosis

    fig = receiver_kurtosis(grid, top_heads=top,
                            title="ThinkEdit: each head's mean write along short-minus-long")
    fig.update_traces(colorbar={"title": "write"}, selector={"type": "heatmap"})
    return fig


if __name__ == "__main__":
    main(sys.argv[1:])
