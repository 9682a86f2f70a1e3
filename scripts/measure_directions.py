"""Measure reasoning directions on SmolLM2-135M-Instruct (docs/directions.md).

Steps (each resumes if its output exists):
 1. traces: N procedural arithmetic problems, greedy, in the cot and direct styles;
 2. capture: resid_post of all 30 layers at (a) the first generated token of every trace,
    (b) the last prompt token, (c) every generated token of the cot traces;
 3. directions: cot-vs-direct sweeps and sentence-label sweeps (printed tables + JSON).

Usage: PYTHONPATH=. python scripts/measure_directions.py OUT_DIR [N=80]
       PYTHONPATH=. python scripts/measure_directions.py OUT_DIR --analyse
(MEASURE_MODEL=tiny-random for a quick dry run of the whole path)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MODEL = os.environ.get("MEASURE_MODEL", "smollm2-135m-instruct")


def traces(model, out: Path, n: int) -> dict[str, Path]:
    from mechreason.model.generation import SamplingConfig
    from mechreason.traces.run import run_traces
    from mechreason.traces.tasks import make_problems

    problems = make_problems("arithmetic", n, seed=0)
    paths = {}
    for style, cap in (("cot", 128), ("direct", 24)):
        paths[style] = out / f"traces-{style}.jsonl"
        run_traces(model, problems, paths[style], style=style, progress=True,
                   sampling=SamplingConfig(max_new_tokens=cap, batch_size=16))
    return paths


def prompt_only(src: list[Path], dst: Path) -> Path:
    """The same records with the generation removed: their last token is the last prompt
    token (so `positions=last` captures exactly the last-prompt aggregation)."""
    with dst.open("w") as f:
        for p in src:
            for line in p.read_text().splitlines():
                rec = json.loads(line)
                rec.update(generated_ids=[], sentences=[], answer_tok_start=None)
                f.write(json.dumps(rec) + "\n")
    return dst


def with_behaviours(src: Path, dst: Path) -> Path:
    """The records with each sentence's behaviour cues (backtracking, uncertainty, ...)
    added to its labels, since capture indexes a sentence's ``labels`` only."""
    with dst.open("w") as f:
        for line in src.read_text().splitlines():
            rec = json.loads(line)
            for s in rec["sentences"]:
                s["labels"] = list(s["labels"]) + list(s.get("behaviours", []))
            f.write(json.dumps(rec) + "\n")
    return dst


def main() -> None:
    import torch

    from mechreason.activations import CaptureConfig, capture
    from mechreason.model.loading import load_model

    torch.set_num_threads(1)  # a shared 2-core machine: one thread avoids oversubscription
    out, n = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 80
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(MODEL, device="cpu")
    paths = traces(model, out, n)
    both = out / "traces-both.jsonl"
    both.write_text(paths["cot"].read_text() + paths["direct"].read_text())
    hooks = ("blocks.*.hook_resid_post",)
    capture(model, both, CaptureConfig(hooks=hooks, positions="first-generated"),
            out / "acts-first", progress=True)
    capture(model, prompt_only([paths["cot"], paths["direct"]], out / "prompts.jsonl"),
            CaptureConfig(hooks=hooks, positions="last"), out / "acts-last", progress=True)
    capture(model, with_behaviours(paths["cot"], out / "traces-cot-labelled.jsonl"),
            CaptureConfig(hooks=hooks, positions="generated"),
            out / "acts-cot-tokens", progress=True)


def sweep_rows(acts: list[Path], contrast: str, aggregate: str, method: str,
               min_problems: int = 10) -> dict:
    from mechreason.directions.pipeline import DirectionsConfig, compute_directions

    cfg = DirectionsConfig(acts=tuple(map(str, acts)), contrast=contrast, aggregate=aggregate,
                           method=method, min_problems=min_problems)
    res = compute_directions(cfg)
    return {"contrast": contrast, "aggregate": aggregate, "method": method,
            "counts": res.directions.counts, "too_small": res.too_small,
            "best": res.directions.best_hook, "layers": res.directions.metrics,
            "result": res}


def table(r: dict) -> str:
    lines = ["| layer | n test A/B | AUROC [95% CI] | bal. acc | Cohen's d | random median / p95 |",
             "|---|---|---|---|---|---|"]
    for m in r["layers"]:
        layer = m["hook"].split(".")[1]
        mark = " **best**" if m["hook"] == r["best"] else ""
        lines.append(f"| {layer}{mark} | {m['n_test'][0]}/{m['n_test'][1]} | {m['auroc']:.3f} "
                     f"[{m['auroc_ci95'][0]:.2f}, {m['auroc_ci95'][1]:.2f}] | "
                     f"{m['accuracy']:.2f} | {m['cohens_d']:.2f} | {m['random_auroc']:.2f} / {m['random_p95']:.2f} |")
    return "\n".join(lines)


def analyse(out: Path) -> None:
    """Print the markdown for docs/directions.md and write summary.json."""
    from collections import Counter

    from mechreason.activations import ActivationStore
    from mechreason.directions.io import import_gguf, load_direction
    from mechreason.directions.pipeline import export_result, save_result
    from mechreason.directions.read import cosine_matrix, logit_lens
    from mechreason.errors import MechReasonError
    from mechreason.model.loading import load_model

    summary = {}
    for agg, acts in (("first-generated", out / "acts-first"), ("last-prompt", out / "acts-last")):
        for method in ("mean-diff", "logistic"):
            r = sweep_rows([acts], "style=cot:direct", agg, method)
            print(f"\n### cot vs direct, {agg}, {method}\ncounts {r['counts']}\n")
            print(table(r))
            summary[f"cot-direct/{agg}/{method}"] = {k: v for k, v in r.items() if k != "result"}
            if method == "mean-diff":
                d = out / f"dir-cot-direct-{agg}"
                from mechreason.directions.pipeline import DirectionsConfig

                save_result(d, DirectionsConfig(acts=(str(acts),), contrast="style=cot:direct",
                                                aggregate=agg), r["result"])
                ds = r["result"].directions
                gg = out / f"cot-direct-{agg}.gguf"
                export_result(gg, ds, "all", "llama")
                back = import_gguf(gg).hooks()
                same = all(bool((back[h] == ds.vector(h)).all()) for h in back)
                print(f"\nGGUF export of layers 1..29 -> {gg.name}; re-import identical: {same}")
                summary[f"cot-direct/{agg}/gguf_identical"] = same
    tokens = out / "acts-cot-tokens"
    store = ActivationStore(tokens)
    counts = Counter(t for it in store.items for labs in it.get("sentence_labels") or []
                     for t in set(labs))
    n_sent = sum(len(it.get("sentence_labels") or []) for it in store.items)
    print(f"\n### sentence labels over {n_sent} cot sentences of {len(store.items)} traces")
    print("\n".join(f"- {k}: {v}" for k, v in counts.most_common()))
    summary["label_counts"] = dict(counts)
    label_dirs = {}
    for label, c in counts.most_common():
        if c < 5:
            continue
        try:
            r = sweep_rows([tokens], f"label={label}", "sentence-start", "label-vs-all")
        except MechReasonError as e:  # e.g. the rest lies in too few problems to split
            print(f"\n#### label={label}: {c} sentences; not measurable: {e}")
            summary[f"label/{label}"] = {"error": str(e), "count": c}
            continue
        best = next(m for m in r["layers"] if m["hook"] == r["best"])
        print(f"\n#### label={label} (vs the rest), sentence-start, label-vs-all: counts "
              f"{r['counts']}, too_small={r['too_small']}; best {r['best']} AUROC "
              f"{best['auroc']:.3f} [{best['auroc_ci95'][0]:.2f}, {best['auroc_ci95'][1]:.2f}]"
              f" (random p95 {best['random_p95']:.2f})\n")
        print(table(r))
        summary[f"label/{label}"] = {k: v for k, v in r.items() if k != "result"}
        label_dirs[label] = r["result"].directions
    model = load_model(MODEL, device="cpu")
    ds = load_direction(out / "dir-cot-direct-last-prompt")
    for h in (ds.best_hook, f"blocks.{model.n_layers - 1}.hook_resid_post"):
        lens = logit_lens(model, ds.vector(h), k=10)
        print(f"\nlogit lens, cot-direct last-prompt {h}: promoted "
              f"{[t.token for t in lens.promoted]}, suppressed {[t.token for t in lens.suppressed]}")
    hook = f"blocks.{model.n_layers // 2}.hook_resid_post"
    vecs = {f"label={k}": v.vector(hook) for k, v in label_dirs.items()}
    vecs["cot-direct(first-gen)"] = load_direction(
        out / "dir-cot-direct-first-generated").vector(hook)
    vecs["cot-direct(last-prompt)"] = ds.vector(hook)
    names, m = cosine_matrix(vecs)
    print(f"\ncosines at {hook}:")
    for i, n in enumerate(names):
        print(f"- {n}: " + ", ".join(f"{m[i, j]:+.2f}" for j in range(len(names))))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))


if __name__ == "__main__":
    if "--analyse" in sys.argv:
        analyse(Path(sys.argv[1]))
    else:
        main()
