"""ReasonScore (Galichin et al. 2025, "I Have Covered All the Bases Here: Interpreting
Reasoning Features in Large Language Models via Sparse Autoencoders").

A latent's ReasonScore is its share of activation in windows around reasoning words
("wait", "hmm", "alternatively", "but", "therefore", ...; 1 token left, 2 right),
weighted by the normalised entropy of its activation across the word groups (alpha
0.7, so a latent that fires on one word only scores low), minus its share outside the
windows. The paper (DeepSeek-R1-Distill-Llama-8B, SAE on layer 19) finds the top
features fire on reflection and uncertainty, and steering them lengthens reasoning
and raises benchmark accuracy.

Here: :func:`mechreason.sae.features.reason_scores` over the model's own cot traces
plus a few bundled reasoning-style texts (a 135M model rarely says "wait"); the SAE is
``--sae``, else a shipped SAE for the model, else a small top-k SAE trained in the
script. Checks: split-half stability of the scores (Spearman, top-k overlap), the
in-window/out-of-window activation ratio of the top latents against random latents
(the control), and steering the top latent at generated tokens vs a random latent.

    python analyses/reasonscore.py --out analyses/results/reasonscore
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import _common as C

PAPER = {"model": "DeepSeek-R1-Distill-Llama-8B", "finding":
         "top ReasonScore features respond to reflection/uncertainty; steering them lengthens "
         "reasoning and raises accuracy", "source": "Galichin et al. 2025, sections 4-5"}

TEXTS = (
    "Wait, that does not look right. Let me recompute the total.",
    "Hmm, maybe I should check the second step again.",
    "Alternatively, we could count the apples first and then subtract.",
    "But the question asks for the remaining coins, so I need to subtract.",
    "Perhaps the answer is 12. However, let me verify it by adding back.",
    "Therefore, the total is 35. Wait, I forgot the three extra books.",
    "Another way to see it: 4 times 6 is 24, but five are taken out.",
    "Let me think again. Hmm, 17 plus 8 is 25, therefore the answer is 25.",
)


def corpus(model: Any, args: Any, out: Path, tune: list[Any]
           ) -> tuple[Path, dict[str, list[int]], dict[str, int]]:
    """cot trace records of the tune problems plus the bundled texts as one JSONL; item ->
    ids; item -> first scored position (generated tokens of traces, every token of a text)."""
    recs = C.traces(model, tune, out / "traces_cot.jsonl", style="cot",
                    max_new_tokens=args.max_new_tokens)
    texts = [{"id": f"text{i}", "text": t} for i, t in enumerate(TEXTS)]
    path = C.write_records(out / "corpus.jsonl", [*recs, *texts])
    tokens = {r["id"]: list(r["prompt_ids"]) + list(r["generated_ids"]) for r in recs}
    tokens |= {t["id"]: model.encode(t["text"]) for t in texts}
    first = {r["id"]: r["prompt_len"] for r in recs} | {t["id"]: 0 for t in texts}
    return path, tokens, first


def stability(sae: Any, store: Any, hook: str, tokens: dict[str, list[int]], tok: Any,
              rows: list[int], top: int) -> dict[str, Any]:
    """Scores on two halves of the items: Spearman and top-k overlap."""
    from mechreason.errors import MechReasonError
    from mechreason.sae.features import reason_scores, spearman

    items = sorted(tokens)
    halves = [set(items[0::2]), set(items[1::2])]
    try:
        s = [reason_scores(sae, store, hook, {i: tokens[i] for i in h}, tok,
                           rows=[r for r in rows if store.rows[r]["item"] in h]).scores
             for h in halves]
    except MechReasonError as e:  # a half without any reasoning word
        return {"error": str(e)}
    a, b = (set(x.argsort(descending=True)[:top].tolist()) for x in s)
    return {"spearman": spearman(s[0], s[1]), "top_overlap": len(a & b) / top}


def within(sae: Any, store: Any, hook: str, tokens: dict[str, list[int]], tok: Any,
           rows: list[int], groups: dict[str, list[int]]) -> dict[str, Any]:
    """The log in/out ratio of each latent group within the bundled texts only and within
    the traces only, so a latent that merely fires on one sub-corpus (the texts hold most
    word windows) cannot pass as a reasoning-word latent."""
    import torch

    from mechreason.errors import MechReasonError
    from mechreason.sae.features import reason_scores

    out: dict[str, Any] = {}
    for name, keep in (("texts only", lambda i: i.startswith("text")),
                       ("traces only", lambda i: not i.startswith("text"))):
        sub = {i: t for i, t in tokens.items() if keep(i)}
        try:
            r = reason_scores(sae, store, hook, sub, tok,
                              rows=[n for n in rows if store.rows[n]["item"] in sub])
        except MechReasonError as e:  # no reasoning word in this sub-corpus
            out[name] = {"error": str(e)}
            continue
        ratio = (r.mean_in + 1e-6) / (r.mean_out + 1e-6)
        out[name] = {"windows": r.group_counts, **{
            g: C.mean([float(torch.log(ratio[j])) for j in js]) for g, js in groups.items()}}
    return out


def steer_arm(model: Any, sae: Any, latent: int, alpha: float, probs: list[Any], out: Path,
              name: str, max_new_tokens: int) -> list[dict[str, Any]]:
    from mechreason.steering import AddLatent, steer

    hook = sae.cfg.hook
    with steer(model, AddLatent(hook=hook, sae=sae, latent=latent, alpha=alpha,
                                positions="generated")):
        return C.traces(model, probs, out / f"steer_{name}_l{latent}_a{alpha:g}.jsonl", style="cot",
                        max_new_tokens=max_new_tokens)


def reason_word_rate(recs: list[dict[str, Any]]) -> list[float]:
    """Per trace: reasoning words per sentence."""
    import re

    from mechreason.sae.features import REASON_WORDS

    pat = re.compile(r"(?<![A-Za-z])(" + "|".join(REASON_WORDS) + r")(?![A-Za-z])", re.I)
    return [len(pat.findall(r["generated_text"])) / max(r["n_sentences"], 1) for r in recs]


def eval_ratios(model: Any, sae: Any, hook: str, out: Path, recs: list[dict[str, Any]],
                latents: dict[str, list[int]]) -> dict[str, Any]:
    """Log in/out-of-window activation ratio of the latents chosen on tune, on the eval
    problems' unsteered cot traces (never used to choose them)."""
    import torch

    from mechreason.errors import MechReasonError
    from mechreason.sae.features import reason_scores

    tokens = {r["id"]: list(r["prompt_ids"]) + list(r["generated_ids"]) for r in recs}
    try:
        store = C.capture_traces(model, out / "steer_none.jsonl", out / "acts_eval", [hook])
        first = {r["id"]: r["prompt_len"] for r in recs}
        rows = [n for n, r in enumerate(store.rows) if r["pos"] >= first[r["item"]]]
        res = reason_scores(sae, store, hook, tokens, model.tokenizer, rows=rows)
    except MechReasonError as e:
        return {"error": f"not computed: {e}"}
    ratio = (res.mean_in + 1e-6) / (res.mean_out + 1e-6)
    return {k: C.mean([float(torch.log(ratio[j])) for j in js]) for k, js in latents.items()} \
        | {"windows": res.group_counts}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = C.parser(__doc__ or "", n=24)
    ap.add_argument("--sae", help="SAE folder (default: shipped, else trained here)")
    ap.add_argument("--layer", type=int, help="layer when training an SAE (default: middle)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=4.0, help="steering: latent value added")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens, args.top = min(args.n, 4), 12, 5
    import torch

    from mechreason.sae.features import reason_scores

    model, out = C.start(args)
    sp = C.split(args)
    path, tokens, first = corpus(model, args, out, sp.tune)
    sae, source = C.existing_sae(args, model)
    layer = args.layer if args.layer is not None else model.n_layers // 2
    hook = (sae.cfg.hook if sae is not None else None) or f"blocks.{layer}.hook_resid_post"
    store = C.capture_traces(model, path, out / "acts", [hook])
    rows = [n for n, r in enumerate(store.rows) if r["pos"] >= first[r["item"]]]
    if sae is None:
        sae, source = C.train_small_sae(args, model, store, hook, out, rows=rows)
    res = reason_scores(sae, store, hook, tokens, model.tokenizer, rows=rows)
    order = res.scores.argsort(descending=True).tolist()
    top = order[:args.top]
    ratio = (res.mean_in + 1e-6) / (res.mean_out + 1e-6)
    alive = [j for j in range(len(ratio)) if float(res.mean_in[j] + res.mean_out[j]) > 0]
    rng = random.Random(args.seed)
    rand = rng.sample([j for j in alive if j not in top] or alive, min(args.top, len(alive)))
    log_ratio = lambda js: [float(torch.log(ratio[j])) for j in js]  # noqa: E731
    stab = stability(sae, store, hook, tokens, model.tokenizer, rows, args.top)
    split = within(sae, store, hook, tokens, model.tokenizer, rows, {"top": top, "random": rand})
    held = sp.eval
    ctrl = rand[0] if rand else (top[0] + 1) % len(ratio)
    arms = {"top latent": steer_arm(model, sae, top[0], args.alpha, held, out, "top",
                                    args.max_new_tokens),
            "random latent (control)": steer_arm(model, sae, ctrl, args.alpha, held, out,
                                                 "random", args.max_new_tokens),
            "unsteered": C.traces(model, held, out / "steer_none.jsonl", style="cot",
                                  max_new_tokens=args.max_new_tokens,  # canned on tiny-random only
                                  scripted=args.model == "tiny-random")}
    on_eval = eval_ratios(model, sae, hook, out, arms["unsteered"], {"top": top, "random": rand})
    steer_tab = {k: {"tokens": C.mean([r["n_generated_tokens"] for r in v]),
                     "reason_words_per_sentence": C.mean(reason_word_rate(v)),
                     "accuracy": C.proportion(sum(r["correct"] is True for r in v), len(v))}
                 for k, v in arms.items()}
    numbers = {"sae": source, "hook": hook, "n_latents": len(ratio), "n_alive": len(alive),
               "word_window_rows": res.group_counts,
               "top": [{"latent": j, "score": float(res.scores[j]),
                        "entropy": float(res.entropy[j]), "in_out_ratio": float(ratio[j])}
                       for j in top],
               "log_in_out_ratio_top": C.mean(log_ratio(top)),
               "log_in_out_ratio_random": C.mean(log_ratio(rand)),
               "split_half": stab, "within_subcorpus": split, "steering": steer_tab,
               "log_in_out_ratio_on_eval": on_eval,
               "steering_latents": {"top": top[0], "control": ctrl}}
    figs = C.save_figure(args, lambda: _figure(top, [float(res.scores[j]) for j in top]), out,
                         "reasonscore_top")
    body = [f"SAE: {source}; hook `{hook}`; {len(alive)} of {len(ratio)} latents fire.",
            f"Corpus: {len(tokens) - len(TEXTS)} cot traces ({args.max_new_tokens} new tokens) "
            f"+ {len(TEXTS)} bundled reasoning-style texts; window rows per word: "
            f"{res.group_counts}.", "",
            "| latent | ReasonScore | entropy | in/out activation ratio |", "|---|---|---|---|",
            *[f"| {t['latent']} | {t['score']:.3g} | {t['entropy']:.3g} | {t['in_out_ratio']:.3g} |"
              for t in numbers["top"]], "",
            f"Split-half stability: {stab}.", "",
            "Log in/out ratio within one sub-corpus (the top latents are still the ones "
            "ranked on the whole corpus; epsilon 1e-6 on both means):", "",
            *[f"- {k}: " + (v["error"] if "error" in v else
                            f"top {C.fmt(v['top'])}, random {C.fmt(v['random'])}; windows "
                            f"{v['windows']}") for k, v in split.items()], "",
            f"Steering (AddLatent, alpha {args.alpha}, every generated token) on {len(held)} "
            "held-out problems:", "", "| arm | tokens | reasoning words / sentence | accuracy |",
            "|---|---|---|---|",
            *[f"| {k} | {C.fmt(v['tokens'])} | {C.fmt(v['reason_words_per_sentence'])} | "
              f"{C.fmt(v['accuracy'])} |" for k, v in steer_tab.items()], "",
            f"Figure: {', '.join(figs) or 'skipped'}."]
    C.write_report(
        out, model, args, script="reasonscore.py", title="ReasonScore (Galichin et al. 2025)",
        citation="Galichin, A. et al. (2025). I Have Covered All the Bases Here: Interpreting "
                 "Reasoning Features in Large Language Models via Sparse Autoencoders.",
        rows=[("top features fire on reasoning words (log in/out ratio, top; eval traces)",
               "yes (qualitative)", on_eval.get("top", on_eval.get("error"))),
              ("same, random latents (control; eval traces)", "-", on_eval.get("random", "-")),
              ("log in/out ratio, top, in-sample on the tune corpus that chose them", "-",
               numbers["log_in_out_ratio_top"]),
              ("same, random latents (tune corpus)", "-", numbers["log_in_out_ratio_random"]),
              *[(f"log in/out ratio within {k}: top vs random latents", "-",
                 f"{C.fmt(v['top'])} vs {C.fmt(v['random'])}") for k, v in split.items()
                if "error" not in v],
              ("split-half Spearman of scores", "not reported", stab.get("spearman", "n/a")),
              ("steering top feature: tokens", "longer reasoning", steer_tab["top latent"]["tokens"]),
              ("steering random latent: tokens", "-",
               steer_tab["random latent (control)"]["tokens"]),
              ("unsteered: tokens", "-", steer_tab["unsteered"]["tokens"])],
        why=[f"Model and SAE: a 135M instruct model with a small SAE ({source}) vs an 8B "
             "distilled reasoning model with an SAE trained on hundreds of millions of tokens.",
             "Corpus: short procedural-arithmetic traces where reasoning words are rare, topped "
             "up with bundled texts, so the word windows hold few rows "
             f"({sum(res.group_counts.values())} here; see the within-sub-corpus lines for "
             "where they fall).",
             "The in/out ratios are in-sample: the top latents are chosen by their in-window "
             "share on the same rows, so a high ratio is partly by construction; the random "
             "latents and the split-half stability are the checks against that.",
             "The paper reads the top features by hand and steers them on AIME/MATH; here the "
             "check is automatic (activation ratio vs random latents) and steering is on "
             "held-out arithmetic at small n."],
        body=body, numbers=numbers, paper=PAPER, split=sp,
        chosen={"top latents (ReasonScore on the tune corpus)": top,
                "steered latent": f"{top[0]} (alpha {args.alpha}, fixed)"})
    return numbers


def _figure(latents: list[int], scores: list[float]) -> Any:
    from mechreason.report.plots import feature_ranking

    return feature_ranking(latents, scores, score_name="ReasonScore",
                           title="ReasonScore: top SAE latents")


if __name__ == "__main__":
    main(sys.argv[1:])
