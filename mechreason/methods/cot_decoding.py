"""CoT-decoding (Wang and Zhou 2024, "Chain-of-Thought Reasoning Without Prompting"):
branch on the top-k first tokens, continue each branch greedily, and score a path by
its confidence in the answer: the mean, over the answer's tokens only, of the
top-1 minus top-2 probability margin of the next-token distribution. Choose the
highest-scoring path, or aggregate by answer (sum of path scores per answer).

The branches decode together through the engine (:mod:`mechreason.model.engine`), so
CoT-decoding runs under a steering context unchanged.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from mechreason.errors import MechReasonError
from mechreason.model import engine
from mechreason.model.engine import SamplingConfig
from mechreason.model.generation import Generation, generate

if TYPE_CHECKING:
    from mechreason.model.loading import Model

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


class CotPath(NamedTuple):
    """One branch."""

    ids: list[int]
    """Generated ids, starting with the branch token (EOS excluded)."""
    text: str
    answer: str | None
    """The extracted, normalised answer (None if none parses)."""
    score: float
    """Mean top-1 minus top-2 probability margin over the answer tokens (0 if none)."""
    margins: list[float]
    """The margin at every generated token."""
    answer_tokens: tuple[int, int] | None
    """Token range ``[start, end)`` of the answer within ``ids``."""


class CotResult(NamedTuple):
    paths: list[CotPath]
    """In branch order (the first-token top-k order)."""
    best: CotPath
    """The highest-scoring path."""
    aggregated: str | None
    """The answer with the largest summed score over paths."""


def _answer_span(model: Model, ids: list[int]) -> tuple[str, str | None, tuple[int, int] | None]:
    from mechreason.traces.grading import extract
    from mechreason.traces.sentences import decode_offsets

    text, offsets = decode_offsets(model.tokenizer, ids)
    found = extract(text)
    if found is None:
        return text, None, None
    m = _NUMBER.search(text, found.start)
    start, end = (m.start(), m.end()) if m else (found.start, len(text))
    toks = [i for i, (s, e) in enumerate(offsets) if e > start and s < end]
    return text, found.answer, (toks[0], toks[-1] + 1) if toks else None


def cot_decode(model: Model, prompt_ids: Sequence[int], *, k: int = 10,
               max_new_tokens: int = 128) -> CotResult:
    """CoT-decode one prompt (see the module docstring)."""
    import torch

    if k < 1 or max_new_tokens < 1:
        raise MechReasonError(f"k and max_new_tokens must be >= 1, got {k}, {max_new_tokens}")
    prompt = list(prompt_ids)
    first = engine.forward(model.hf, torch.tensor([prompt], device=model.device),
                           use_cache=False, logits_to_keep=1).logits
    assert first is not None
    p0 = first[0, -1].float().softmax(-1)
    top2 = p0.topk(2).values
    m0 = float(top2[0] - top2[1])
    branches = p0.topk(k).indices.tolist()
    paths = []
    if max_new_tokens > 1:
        cfg = SamplingConfig(max_new_tokens=max_new_tokens - 1, batch_size=k)
        conts = generate(model, [[*prompt, b] for b in branches], cfg, top2=True)
    else:
        conts = [Generation([], "", "length", []) for _ in branches]
    for b, cont in zip(branches, conts):
        margins = [m0] + [p1 - p2 for p1, p2 in cont.top2 or []]
        gen = [b, *cont.ids]
        text, answer, span = _answer_span(model, gen)
        score = sum(margins[span[0]:span[1]]) / (span[1] - span[0]) if span else 0.0
        paths.append(CotPath(gen, text, answer, score, margins[:len(gen)], span))
    best = max(paths, key=lambda p: p.score)
    totals: dict[str, float] = defaultdict(float)
    for p in paths:
        if p.answer is not None:
            totals[p.answer] += p.score
    agg = max(totals, key=lambda a: totals[a]) if totals else None
    return CotResult(paths, best, agg)
