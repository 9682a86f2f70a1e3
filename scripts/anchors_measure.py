"""Thought-anchors measurement on SmolLM2-135M-Instruct (docs/anchors.md), run once.

    python scripts/anchors_measure.py gen  OUT   # 24 short CoT traces (sampled, T=0.6)
    python scripts/anchors_measure.py run  OUT   # full analysis of one 8-15 sentence trace

``gen`` writes OUT/traces.jsonl (records with prompt_ids, generated_ids and sentence token
spans); ``run`` picks the first trace with 8 to 15 sentences and a parsed answer and runs
``mechreason.anchors.analysis.analyze`` on it (receiver heads over all traces).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

PROBLEMS = [
    ("Tom has 3 apples and buys 5 more. How many apples does he have?", "8"),
    ("A box holds 6 eggs. How many eggs are in 4 boxes?", "24"),
    ("Sara had 20 dollars and spent 7. How much money is left?", "13"),
    ("There are 12 birds on a tree and 5 fly away. How many birds remain?", "7"),
    ("A pencil costs 2 dollars. How much do 9 pencils cost?", "18"),
    ("Jake reads 10 pages a day. How many pages does he read in 6 days?", "60"),
    ("A class has 14 boys and 13 girls. How many students are in the class?", "27"),
    ("Anna has 30 stickers and gives 12 to her friend. How many does she keep?", "18"),
    ("A car travels 50 km each hour. How far does it go in 3 hours?", "150"),
    ("There are 8 rows of 7 chairs. How many chairs are there?", "56"),
    ("Mia baked 24 cookies and shared them equally among 4 friends. How many did each get?", "6"),
    ("A farmer has 9 cows and buys 6 more, then sells 4. How many cows does he have?", "11"),
    ("Leo has 5 boxes with 3 toys each. How many toys does he have?", "15"),
    ("A shirt costs 15 dollars and a hat costs 8 dollars. What is the total cost?", "23"),
    ("There were 40 people on a bus. 15 got off. How many are still on the bus?", "25"),
    ("A garden has 4 rows of 11 flowers. How many flowers are in the garden?", "44"),
    ("Ben scored 12 points and Sam scored twice as many. How many points did Sam score?", "24"),
    ("A bag has 18 marbles split equally into 3 bags. How many marbles per bag?", "6"),
    ("Lily walks 2 km each morning and 3 km each evening. How far does she walk in a day?", "5"),
    ("A baker makes 7 cakes a day. How many cakes in 5 days?", "35"),
    ("Kim had 50 beads and used 18 for a necklace. How many beads are left?", "32"),
    ("Each pack has 10 cards. How many cards are in 7 packs?", "70"),
    ("A tank holds 100 liters and is half full. How many liters are in it?", "50"),
    ("Max has 16 candies and eats 4, then gets 9 more. How many candies does he have?", "21"),
]
INSTRUCT = " Think step by step in several short sentences, then give the final answer as \\boxed{N}."


def gen(out: Path) -> None:
    import torch

    from mechreason.anchors.embed import fallback_extract, fallback_grade
    from mechreason.anchors.trace import trace_from_ids
    from mechreason.model.loading import load_model

    model = load_model("smollm2-135m-instruct", device="cpu")
    pad = model.pad_id
    torch.manual_seed(0)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(out / "traces.jsonl", "w") as f:
        for b in range(0, len(PROBLEMS), 12):
            batch = PROBLEMS[b:b + 12]
            prompts = [model.encode(model.format_prompt(q + INSTRUCT)) for q, _ in batch]
            width = max(map(len, prompts))
            x = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
            with torch.inference_mode():
                y = model.hf.generate(input_ids=x, attention_mask=mask, do_sample=True,
                                      temperature=0.6, top_p=0.95, max_new_tokens=150,
                                      pad_token_id=pad)
            for (q, gold), p, row in zip(batch, prompts, y[:, width:].tolist()):
                gen_ids = []
                for t in row:
                    if t in model.eos_ids:
                        break
                    gen_ids.append(t)
                tr = trace_from_ids(model, p, gen_ids, id=f"p{len(gen_ids)}-{b}", gold=gold)
                ans = fallback_extract(tr.generated_text)
                rec = {"id": f"q{PROBLEMS.index((q, gold))}", "question": q, "prompt_ids": p,
                       "generated_ids": gen_ids, "generated_text": tr.generated_text,
                       "gold": gold, "answer": ans, "correct": fallback_grade(ans, gold),
                       "prompt_len": len(p),
                       "sentences": [{"idx": i, "text": tr.texts[i], "char_start": tr.char_starts[i],
                                      "tok_start": a, "tok_end": e, "labels": []}
                                     for i, (a, e) in enumerate(tr.spans)]}
                f.write(json.dumps(rec) + "\n")
    print(f"generated {len(PROBLEMS)} traces in {time.time() - t0:.0f}s")


def _regrade(out: Path) -> None:
    """Grade every record with mechreason.traces.grading (gen used the fallback grader)."""
    from mechreason.traces.grading import extract_answer, grade

    path = out / "traces.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:
        r["answer"] = extract_answer(r["generated_text"])
        r["correct"] = grade(r["answer"], r["gold"])
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _pick(out: Path) -> int:
    recs = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    from mechreason.anchors.embed import final_answer_stated

    # 8 to 15 sentences, finished before the cap, final answer stated by a cue
    pick = [i for i, r in enumerate(recs) if 8 <= len(r["sentences"]) <= 15
            and len(r["generated_ids"]) < 150 and final_answer_stated(r["generated_text"])]
    print("sentences per trace:", [len(r["sentences"]) for r in recs], "candidates:", pick)
    return pick[0]


def run(out: Path, methods: str = "resample,receivers,suppression") -> None:
    """One analysis with ``methods`` into OUT/<methods>/ (run the methods in separate
    processes on a crowded machine, then ``join``)."""
    from mechreason.anchors.analysis import AnchorsConfig, analyze, load_traces
    from mechreason.anchors.resampling import ResampleConfig
    from mechreason.model.loading import load_model

    model = load_model("smollm2-135m-instruct", device="cpu")
    traces = load_traces(model, out / "traces.jsonl")
    index = _pick(out)
    cfg = AnchorsConfig(index=index, methods=tuple(methods.split(",")),
                        resample=ResampleConfig(rollouts=16, max_new_tokens=128))
    t0 = time.time()
    summary = analyze(model, traces, cfg, out / methods.replace(",", "+"), progress=False)
    summary |= {"seconds": time.time() - t0, "index": index}
    (out / f"summary-{methods.replace(',', '+')}.json").write_text(
        json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary, indent=1, default=str)[:3000])


def join(out: Path) -> None:
    """Join OUT/resample and OUT/receivers+suppression into OUT/joined/."""
    import numpy as np
    from safetensors.torch import load_file

    from mechreason.anchors.analysis import CORR_COLUMNS, load_traces
    from mechreason.anchors.export import viewer_json, write_viewer
    from mechreason.anchors.importance import Importance
    from mechreason.anchors.join import rank_correlations, sentence_table
    from mechreason.anchors.suppression import Suppression
    from mechreason.artifacts import write_json

    traces = load_traces(None, out / "traces.jsonl")  # records carry their spans
    index = _pick(out)
    imp = Importance(**json.loads((out / "resample" / "resampling.json").read_text()))
    rs = out / "receivers+suppression"
    sup = Suppression(**load_file(str(rs / "suppression.safetensors")))
    rec = json.loads((rs / "receivers.json").read_text())
    scores = [r.get("receiver_score") for r in json.loads((rs / "table.json").read_text())["rows"]]
    rows = sentence_table(traces[index], importance=imp,
                          receiver_scores=[np.nan if v is None else v for v in scores],
                          suppression=sup)
    corr = [c._asdict() for c in rank_correlations(rows, list(CORR_COLUMNS))]
    write_json(out / "joined" / "table.json", {"rows": rows, "rank_correlations": corr,
                                               "receivers": rec})
    write_viewer(out / "joined" / "viewer", *viewer_json(rows, imp.matrix))
    print(json.dumps({"rows": rows, "corr": corr}, indent=1, default=str)[:6000])


def report(out: Path) -> None:
    """Markdown tables for docs/anchors.md from OUT/joined/table.json."""
    t = json.loads((out / "joined" / "table.json").read_text())
    rows, corr, rec = t["rows"], t["rank_correlations"], t["receivers"]
    cols = ["accuracy", "resampling_accuracy", "counterfactual_kl", "forced_importance_accuracy",
            "different_trajectories", "receiver_score", "suppression_out"]

    def f(v):
        return "–" if v is None else f"{v:.3g}"

    print("| # | labels | sentence | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 3) + "|")
    for r in rows:
        text = r["text"].replace("|", "/").replace("\n", " ")[:70]
        print(f"| {r['idx']} | {','.join(r['labels']) or '–'} | {text} | "
              + " | ".join(f(r.get(c)) for c in cols) + " |")
    print("\n| a | b | rho | 95% CI | perm p | n |\n|---|---|---|---|---|---|")
    for c in corr:
        print(f"| {c['a']} | {c['b']} | {f(c['rho'])} | [{f(c['ci_lo'])}, {f(c['ci_hi'])}] | "
              f"{f(c['p_perm'])} | {c['n']} |")
    for col in ("counterfactual_kl", "resampling_kl", "forced_importance_kl", "receiver_score",
                "suppression_out"):
        top = sorted((r for r in rows if r.get(col) is not None), key=lambda r: -r[col])[:3]
        print(f"top-3 {col}: " + "; ".join(f"#{r['idx']} {r['labels']}" for r in top))
    print("receiver heads:", rec["heads"], "\nreliability:", rec["reliability"])


if __name__ == "__main__":
    {"gen": gen, "run": run, "join": join, "report": report}[sys.argv[1]](Path(sys.argv[2]), *sys.argv[3:])
