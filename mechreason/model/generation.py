"""Generation: the one narrow black-box interface that traces go through.

Prompt token ids and sampling settings in, generated token ids out
(:func:`generate`). Prompts are left-padded into batches (sorted by length so padding
is small), prefilled once, then decoded one token per step with the HF KV cache, with
per-row absolute positions, by the decode engine (:mod:`mechreason.model.engine`), so hooks
on the model (``hooks_context``, steering) fire at every step. Greedy decoding is
temperature 0; sampling (temperature, top-p) draws each row from its own seeded
generator, so a prompt's sample does not depend on which batch it lands in. A row
leaves the batch as soon as it finishes. Generation stops at an
EOS token (excluded from ``ids``), a stop string, or the length cap. A vLLM backend
can serve the same signature later (DESIGN.md section 10).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from mechreason.errors import MechReasonError
from mechreason.model import engine
from mechreason.model.engine import SamplingConfig, nucleus_drop

if TYPE_CHECKING:
    import torch

    from mechreason.backends.base import Completion, GenerationBackend
    from mechreason.model.loading import Model

__all__ = ["Generation", "SamplingConfig", "decode", "generate", "iter_generate", "iter_generate_via",
           "nucleus_drop"]


class Generation(NamedTuple):
    """One generated continuation."""

    ids: list[int]
    """Generated token ids (the EOS token, if one ended it, is not included)."""
    text: str
    """``ids`` decoded (special tokens kept, no clean-up, so offsets line up)."""
    finish_reason: str
    """``eos``, ``stop`` (a stop string) or ``length`` (hit max_new_tokens)."""
    top2: list[tuple[float, float]] | None = None
    """With ``top2=True``: the two highest next-token probabilities (softmax of the raw
    logits) at each generated token (CoT-decoding's confidence margin)."""


def generate(model: Model, prompt_ids: Sequence[Sequence[int]], cfg: SamplingConfig,
             *, seeds: Sequence[int] | None = None, progress: bool = False,
             top2: bool = False) -> list[Generation]:
    """Generate a continuation for every prompt, in input order (see module docstring)."""
    out: list[Generation | None] = [None] * len(prompt_ids)
    for i, gen in iter_generate(model, prompt_ids, cfg, seeds=seeds, progress=progress,
                                top2=top2):
        out[i] = gen
    assert all(g is not None for g in out)
    return [g for g in out if g is not None]


def iter_generate(model: Model, prompt_ids: Sequence[Sequence[int]], cfg: SamplingConfig,
                  *, seeds: Sequence[int] | None = None, progress: bool = False,
                  top2: bool = False) -> Iterator[tuple[int, Generation]]:
    """Yield ``(index, Generation)`` as each batch finishes (for append-as-you-go)."""
    from mechreason.progress import bar

    prompts = [list(p) for p in prompt_ids]
    if any(not p for p in prompts):
        raise MechReasonError("every prompt needs at least one token; got an empty prompt")
    if seeds is not None and len(seeds) != len(prompts):
        raise MechReasonError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    row_seeds = list(seeds) if seeds is not None else [cfg.seed + i for i in range(len(prompts))]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    with bar("generate", len(prompts), unit="seq", enabled=progress) as shown:
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            gens = _generate_batch(model, [prompts[i] for i in idx],
                                   [row_seeds[i] for i in idx], cfg, top2)
            shown.update(len(idx))
            yield from zip(idx, gens)


def finish_rule(model: Model, cfg: SamplingConfig, caps: Sequence[int],
                reason: list[Any]) -> Callable[[int, list[int]], bool]:
    """The one stopping rule of generation (the decode loop's ``done``): a row ends at
    EOS, at a stop string in the text of its last 32 tokens, or at its cap ``caps[row]``;
    ``reason[row]`` records which (``eos``, ``stop``; left as given at the cap)."""
    eos = set(model.eos_ids)

    def done(row: int, toks: list[int]) -> bool:
        if toks[-1] in eos:
            reason[row] = "eos"
            return True
        if cfg.stop and any(s in decode(model, toks[-32:]) for s in cfg.stop):
            reason[row] = "stop"
            return True
        return len(toks) >= caps[row]

    return done


def _generate_batch(model: Model, rows: list[list[int]], seeds: list[int],
                    cfg: SamplingConfig, top2: bool) -> list[Generation]:
    gens = engine.generators(seeds) if cfg.temperature > 0 else []
    reason: list[str] = ["length"] * len(rows)
    probs: list[list[tuple[float, float]]] = [[] for _ in rows]

    def choose(logits: torch.Tensor, live: list[int], _tokens: list[list[int]]) -> list[int]:
        if top2:
            for row, t in zip(live, logits.softmax(-1).topk(2, dim=-1).values.tolist()):
                probs[row].append((t[0], t[1]))
        picks = engine.sample(logits, cfg, [gens[r] for r in live] if gens else [])
        return [int(t) for t in picks.tolist()]

    done = finish_rule(model, cfg, [cfg.max_new_tokens] * len(rows), reason)
    out: list[list[int]] = [[] for _ in rows]
    for row, toks in engine.decode_loop(model, engine.prefill(model, rows), choose, done):
        out[row] = toks[:-1] if reason[row] == "eos" else toks
    return [Generation(o, decode(model, o), r, probs[i][:len(o)] if top2 else None)
            for i, (o, r) in enumerate(zip(out, reason))]

def iter_generate_via(backend: GenerationBackend):
    """:func:`iter_generate` served by a generation backend (``mechreason.backends``):
    the same signature, for ``run_traces(generate_fn=...)``. Each prompt's seed is its
    row's seed, as in :func:`iter_generate`; results come per backend call."""
    from mechreason.backends.base import Request
    from mechreason.progress import bar

    def gen(model: Model, prompt_ids: Sequence[Sequence[int]], cfg: SamplingConfig, *,
            seeds: Sequence[int] | None = None, progress: bool = False,
            top2: bool = False) -> Iterator[tuple[int, Generation]]:
        if top2:
            raise MechReasonError(f"top-2 probabilities are not served by the {backend.name!r} "
                                  "backend; use mechreason's own engine")
        if seeds is not None and len(seeds) != len(prompt_ids):
            raise MechReasonError(f"got {len(seeds)} seeds for {len(prompt_ids)} prompts")
        row_seeds = list(seeds) if seeds is not None else [cfg.seed + i for i in range(len(prompt_ids))]
        reqs = [Request(tuple(p), s) for p, s in zip(prompt_ids, row_seeds)]
        step = backend.chunk or cfg.batch_size
        with bar("generate", len(reqs), unit="seq", enabled=progress) as shown:
            for s in range(0, len(reqs), step):
                for i, c in enumerate(backend.generate(reqs[s:s + step], cfg), start=s):
                    yield i, as_generation(model, c)
                shown.update(min(step, len(reqs) - s))

    return gen


def as_generation(model: Model, c: Completion) -> Generation:
    """A backend's :class:`~mechreason.backends.base.Completion` as a :class:`Generation`
    (the EOS token dropped from ``ids``, the text decoded)."""
    ids = c.ids[:-1] if c.finish_reason == "eos" else list(c.ids)
    return Generation(ids, decode(model, ids), c.finish_reason)


def decode(model: Model, ids: Sequence[int]) -> str:
    """Token ids to text with special tokens kept and no clean-up (offset-exact)."""
    return str(model.tokenizer.decode(list(ids), skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False))
