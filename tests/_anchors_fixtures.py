"""Shared helpers for the thought-anchors tests: traces built on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

TEXTS = [
    "First, I add two and three. That gives five, I think. Let me check again. "
    "Yes it is five. Hmm, maybe I should recount. No, it is fine. So the answer is \\boxed{5}.",
    "We need the sum. Two plus two is four. Wait, is that right? Yes, four. "
    "Then add one more. Five in total. The answer is \\boxed{5}.",
]


def make_trace(model, text: str = TEXTS[0], id: str = "t0"):
    from mechreason.anchors.trace import trace_from_ids

    prompt = model.encode(model.format_prompt("What is 2+3?"))
    return trace_from_ids(model, prompt, model.encode(text, special=False), id=id, gold="5")


def write_traces(model, path: Path, n: int = 4) -> Path:
    """A traces JSONL in the ``mechreason.traces.run`` record layout."""
    with open(path, "w") as f:
        for k in range(n):
            tr = make_trace(model, TEXTS[k % len(TEXTS)], id=f"t{k}")
            sents = [{"idx": i, "text": tr.texts[i], "char_start": tr.char_starts[i],
                      "tok_start": a, "tok_end": b, "labels": []}
                     for i, (a, b) in enumerate(tr.spans)]
            f.write(json.dumps({"id": tr.id, "prompt_ids": list(tr.ids[:tr.prompt_len]),
                                "generated_ids": list(tr.ids[tr.prompt_len:]),
                                "generated_text": tr.generated_text, "gold": "5", "answer": "5",
                                "correct": True, "sentences": sents}) + "\n")
    return path
