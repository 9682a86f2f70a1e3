"""Training text for the shipped SAE: the model's own greedy traces on GSM8K train
problems in two styles (cot, direct), as trace records (prompt_ids + generated_ids +
sentence token spans) that ``mechreason capture`` reads, plus plain problem text
(question + worked solution) as ``{"text": ...}`` records.

Used because issue 3's ``mechreason traces`` had not landed on main when the SAE was
trained; the records follow its schema's fields that capture needs.

    python sae_checkpoints/smollm2-135m-instruct-l15-topk/make_data.py \
        --gsm8k /work/shared/data/gsm8k/train.jsonl --out data/sae --n-traces 24 --batch 24
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from mechreason.model.loading import load_model
from mechreason.traces.sentences import split_sentences

STYLES = {
    "cot": ("Solve the problem step by step, then give the final answer on its own line as "
            "'Answer: <number>'.\n\n{q}", 96),
    "direct": ("Give only the final answer, as 'Answer: <number>', with no working.\n\n{q}", 24),
}


def token_spans(tok, ids: list[int], text: str) -> list[dict]:
    """Sentence token spans (absolute positions are added by the caller)."""
    ends = [len(tok.decode(ids[: j + 1], skip_special_tokens=True)) for j in range(len(ids))]
    out = []
    for ch in split_sentences(text):
        t0 = next((j for j, e in enumerate(ends) if e > ch.start), None)
        t1 = next((j + 1 for j, e in enumerate(ends) if e >= ch.end), len(ids))
        if t0 is not None and t1 > t0:
            out.append({"text": ch.text, "tok_start": t0, "tok_end": t1, "labels": []})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gsm8k", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-traces", type=int, default=160)
    ap.add_argument("--n-plain", type=int, default=1200)
    ap.add_argument("--plain-offset", type=int, default=64,
                    help="first GSM8K row of the plain texts (after the traced problems)")
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    rows = [json.loads(x) for x in Path(a.gsm8k).read_text().splitlines() if x.strip()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    first = max(a.n_traces, a.plain_offset)
    plain = rows[first: first + a.n_plain]
    with open(out / "plain.jsonl", "w") as f:
        for i, r in enumerate(plain, start=first):
            sol = re.sub(r"<<[^>]*>>", "", r["answer"]).replace("####", "Answer:")
            f.write(json.dumps({"id": f"gsm{i}:plain", "style": "plain",
                                "text": r["question"] + "\n" + sol}) + "\n")
    model = load_model("smollm2-135m-instruct", device="cpu")
    path = out / "traces.jsonl"
    done = {json.loads(x)["id"] for x in path.read_text().splitlines()} if path.exists() else set()
    for style, (tmpl, max_new) in STYLES.items():
        todo = [(i, r) for i, r in enumerate(rows[: a.n_traces]) if f"gsm{i}:{style}" not in done]
        for b in range(0, len(todo), a.batch):
            _batch(model, todo[b: b + a.batch], style, tmpl, max_new, path)


def _batch(model, items, style, tmpl, max_new, path) -> None:
    tok = model.tokenizer
    prompts = [model.encode(model.format_prompt(tmpl.format(q=r["question"]))) for _, r in items]
    width = max(map(len, prompts))
    ids = torch.tensor([[model.pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        gen = model.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
                                do_sample=False, pad_token_id=model.pad_id,
                                eos_token_id=model.eos_ids)
    with open(path, "a") as f:
        for (i, r), p, g in zip(items, prompts, gen[:, width:].tolist()):
            g = [t for t in g if t != model.pad_id]
            while g and g[-1] in model.eos_ids:
                g = g[:-1]
            text = tok.decode(g, skip_special_tokens=True)
            sents = token_spans(tok, g, text)
            for s in sents:
                s["tok_start"] += len(p)
                s["tok_end"] += len(p)
            f.write(json.dumps({
                "id": f"gsm{i}:{style}", "problem_id": f"gsm{i}", "style": style, "task": "gsm8k",
                "question": r["question"], "gold": r["answer"].split("####")[-1].strip(),
                "prompt_ids": p, "generated_ids": g, "generated_text": text,
                "sentences": sents}) + "\n")
            f.flush()


if __name__ == "__main__":
    main()
