"""Generation: the one narrow black-box interface that traces and rollouts go through.

Prompt token ids and sampling settings in, generated token ids out
(:func:`generate`). Prompts are left-padded into batches (sorted by length so padding
is small), prefilled once, then decoded one token per step with the HF KV cache, with
per-row absolute positions from the attention mask. The loop calls ``model.hf``
(the HF model the TransformerBridge wraps), so hooks registered on the Bridge's hook
points (``hooks_context``) fire during generation. Greedy decoding is temperature 0;
sampling (temperature, top-p) draws each row from its own seeded generator, so a
prompt's sample does not depend on which batch it lands in. Generation stops at an
EOS token (excluded from ``ids``), a stop string, or the length cap. A vLLM backend
can serve the same signature later (DESIGN.md section 10).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    import torch

    from mechreason.models import Model


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How to decode."""

    max_new_tokens: int = 256
    """Length cap on generated tokens (EOS not counted)."""
    temperature: float = 0.0
    """0 is greedy decoding; above 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    seed: int = 0
    """Base seed; prompt i samples with seed ``seed + i`` unless seeds are given."""
    batch_size: int = 8
    """Prompts decoded together (left-padded)."""
    stop: tuple[str, ...] = ()
    """Strings that end a generation once the generated text contains one (kept in it)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise MechReasonError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise MechReasonError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MechReasonError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise MechReasonError(f"batch_size must be >= 1, got {self.batch_size}")
        if isinstance(self.stop, str):
            raise MechReasonError(f"stop must be a tuple of strings, got the string {self.stop!r}")


class Generation(NamedTuple):
    """One generated continuation."""

    ids: list[int]
    """Generated token ids (the EOS token, if one ended it, is not included)."""
    text: str
    """``ids`` decoded (special tokens kept, no clean-up, so offsets line up)."""
    finish_reason: str
    """``eos``, ``stop`` (a stop string) or ``length`` (hit max_new_tokens)."""


def generate(model: Model, prompt_ids: Sequence[Sequence[int]], cfg: SamplingConfig,
             *, seeds: Sequence[int] | None = None, progress: bool = False) -> list[Generation]:
    """Generate a continuation for every prompt, in input order (see module docstring)."""
    out: list[Generation | None] = [None] * len(prompt_ids)
    for i, gen in iter_generate(model, prompt_ids, cfg, seeds=seeds, progress=progress):
        out[i] = gen
    assert all(g is not None for g in out)
    return [g for g in out if g is not None]


def iter_generate(model: Model, prompt_ids: Sequence[Sequence[int]], cfg: SamplingConfig,
                  *, seeds: Sequence[int] | None = None,
                  progress: bool = False) -> Iterator[tuple[int, Generation]]:
    """Yield ``(index, Generation)`` as each batch finishes (for append-as-you-go)."""
    from tqdm.auto import tqdm

    prompts = [list(p) for p in prompt_ids]
    if any(not p for p in prompts):
        raise MechReasonError("every prompt needs at least one token; got an empty prompt")
    if seeds is not None and len(seeds) != len(prompts):
        raise MechReasonError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
    row_seeds = list(seeds) if seeds is not None else [cfg.seed + i for i in range(len(prompts))]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    bar = tqdm(total=len(prompts), desc="generate", unit="seq", disable=not progress)
    try:
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            gens = _generate_batch(model, [prompts[i] for i in idx],
                                   [row_seeds[i] for i in idx], cfg)
            bar.update(len(idx))
            yield from zip(idx, gens)
    finally:
        bar.close()


def _generate_batch(model: Model, rows: list[list[int]], seeds: list[int],
                    cfg: SamplingConfig) -> list[Generation]:
    import torch

    device = model.device
    width = max(len(r) for r in rows)
    ids = torch.tensor([[model.pad_id] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # absolute positions, pads at 0
    gens = _generators(seeds) if cfg.temperature > 0 else None
    eos = set(model.eos_ids)
    out: list[list[int]] = [[] for _ in rows]
    reason: list[str | None] = [None] * len(rows)
    cache = None
    step_ids = ids
    with torch.inference_mode():
        for _ in range(cfg.max_new_tokens):
            res = model.hf(input_ids=step_ids, attention_mask=mask, position_ids=pos,
                           past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = res.past_key_values
            nxt = _choose(res.logits[:, -1, :].float(), cfg, gens).tolist()
            for b, tok in enumerate(nxt):
                if reason[b] is None:
                    reason[b] = _advance(model, out[b], tok, eos, cfg)
            if all(r is not None for r in reason):
                break
            step = torch.tensor([[model.pad_id if reason[b] else t] for b, t in enumerate(nxt)],
                                device=device)
            step_ids = step
            mask = torch.cat([mask, torch.ones_like(step)], dim=1)
            pos = pos[:, -1:] + 1
    return [Generation(o, decode(model, o), r or "length") for o, r in zip(out, reason)]


def _advance(model: Model, out: list[int], tok: int, eos: set[int],
             cfg: SamplingConfig) -> str | None:
    """Append ``tok`` to a row; return its finish reason if this ends it."""
    if tok in eos:
        return "eos"
    out.append(tok)
    if cfg.stop:
        tail = decode(model, out[-32:])
        if any(s in tail for s in cfg.stop):
            return "stop"
    return None


def _generators(seeds: list[int]) -> list[torch.Generator]:
    import torch

    gens = []
    for s in seeds:
        g = torch.Generator(device="cpu")
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def _choose(logits: torch.Tensor, cfg: SamplingConfig,
            gens: list[torch.Generator] | None) -> torch.Tensor:
    """Next token per row: argmax, or a top-p sample from each row's generator."""
    import torch

    if gens is None:
        return logits.argmax(-1)
    probs = torch.softmax(logits / cfg.temperature, dim=-1).cpu()
    if cfg.top_p < 1.0:
        probs = probs.masked_fill(nucleus_drop(probs, cfg.top_p), 0.0)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens)])


def nucleus_drop(probs: torch.Tensor, top_p: float, k: int = 512) -> torch.Tensor:
    """(B, V) mask of the tokens outside the top-p nucleus: a token is dropped when the
    mass of the tokens ranked above it already reaches ``top_p``.

    Sorting the whole vocabulary every step was a fifth of a CPU rollout's time. The
    nucleus is almost always among the ``k`` most probable tokens: where their mass
    reaches ``top_p``, every token outside them is dropped and only they are ranked;
    the other rows (flat distributions) are sorted in full. The mask is the same.
    """
    import torch

    def ranked_drop(values: torch.Tensor) -> torch.Tensor:  # values sorted descending
        return values.cumsum(-1) - values >= top_p

    k = min(k, probs.shape[-1])
    top, idx = probs.topk(k, dim=-1)  # sorted descending
    drop = torch.ones_like(probs, dtype=torch.bool).scatter(-1, idx, ranked_drop(top))
    flat = (top.sum(-1) < top_p).nonzero().flatten()
    if len(flat):
        values, order = probs[flat].sort(-1, descending=True)
        drop[flat] = torch.zeros_like(values, dtype=torch.bool).scatter(-1, order, ranked_drop(values))
    return drop


def decode(model: Model, ids: Sequence[int]) -> str:
    """Token ids to text with special tokens kept and no clean-up (offset-exact)."""
    return str(model.tokenizer.decode(list(ids), skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False))
