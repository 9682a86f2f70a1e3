"""The decode engine: the one place mechreason runs a Hugging Face forward with a KV
cache, and the one sampler.

Everything that decodes (traces, thought-anchor rollouts, CoT-decoding, the hybrid
loop, steered generation) goes through :func:`forward`, the cache operations
(:func:`fork`, :func:`crop`, :func:`select`), :func:`sample` and :func:`decode_loop`:

- **Version differences live here only.** transformers 5.24 renamed the cache argument
  and output field from ``past_key_values`` to ``cache``; :func:`cache_kwarg` reads the
  model class's own signature once, and :func:`out_cache` reads either field.
- **Positions are the engine's.** Rows are left-padded; every forward passes explicit
  per-row absolute positions, and :func:`step_info` publishes ``(past length, mask)``
  of the forward in flight, which the steering hook reads instead of parsing a keyword.
- **Sampling is batch-independent.** Temperature, top-p, then Gumbel-max with one
  seeded generator per row: a row's tokens do not depend on which rows share its batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    import torch
    from jaxtyping import Float, Int
    from torch import Tensor

    from mechreason.model.loading import Model


@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How to decode (one config for traces, rollouts and steered generation)."""

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
        if not self.temperature >= 0:  # also refuses NaN
            raise MechReasonError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise MechReasonError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size < 1:
            raise MechReasonError(f"batch_size must be >= 1, got {self.batch_size}")
        if isinstance(self.stop, str):
            raise MechReasonError(f"stop must be a tuple of strings, got the string {self.stop!r}")


# --- one forward ------------------------------------------------------------------------

@functools.cache
def _cache_kwarg(cls: Any) -> str:
    params = inspect.signature(cls.forward).parameters  # follows the deprecation wrapper
    return "cache" if "cache" in params else "past_key_values"


def cache_kwarg(module: Any) -> str:
    """The name under which ``module.forward`` takes the KV cache (``cache`` from
    transformers 5.24, ``past_key_values`` before)."""
    return _cache_kwarg(type(module))  # type: ignore[arg-type]


def out_cache(out: Any) -> Any:
    """The KV cache of a forward's output, whichever field name it uses."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class Step(NamedTuple):
    """What the forward in flight feeds: how many positions are cached before it, the
    2-D attention mask over cached + current positions (None: no padding), and which
    rows of the generation's first batch are still in it (None: all)."""

    past_len: int
    mask: torch.Tensor | None
    rows: list[int] | None = None


_STEP: weakref.WeakKeyDictionary[Any, Step] = weakref.WeakKeyDictionary()


class Out(NamedTuple):
    """One forward's result."""

    logits: torch.Tensor | None
    """(B, T', V) logits in the model's dtype (T' as kept), or None for a decoder-only forward."""
    hidden: torch.Tensor | None
    """(B, T, d) last hidden state (final norm applied) of a decoder-only forward."""
    cache: Any


def forward(hf: Any, ids: torch.Tensor, *, cache: Any = None, mask: torch.Tensor | None = None,
            positions: torch.Tensor | None = None, use_cache: bool = True,
            logits_to_keep: int | torch.Tensor = 0, decoder_only: bool = False,
            rows: list[int] | None = None) -> Out:
    """One no-grad forward of ``hf`` (a causal LM; ``decoder_only``: its base model,
    skipping the LM head) over ``ids`` (B, T); ``rows``: see :class:`Step`."""
    import torch

    module = decoder(hf) if decoder_only else hf
    kw: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "use_cache": use_cache}
    if positions is not None:
        kw["position_ids"] = positions
    if cache is not None:
        kw[cache_kwarg(module)] = cache
    if not decoder_only:
        kw["logits_to_keep"] = logits_to_keep
    past = int(cache.get_seq_length()) if cache is not None else 0
    _STEP[hf] = Step(past, mask, rows)
    try:
        with torch.inference_mode():
            out = module(**kw)
    finally:
        _STEP.pop(hf, None)
    if decoder_only:
        return Out(None, out.last_hidden_state, out_cache(out))
    return Out(out.logits, None, out_cache(out))


def decoder(hf: Any) -> Any:
    """The base model under an LM head (``hf.model`` for most families)."""
    return hf.get_decoder() if hasattr(hf, "get_decoder") else hf.model


def step_info(hf: Any, kwargs: dict[str, Any]) -> Step:
    """The :class:`Step` of the forward in flight: the engine's own when it runs the
    forward, else derived from the call (HF ``generate`` or a user's own loop)."""
    own = _STEP.get(hf)
    if own is not None:
        return own
    cache = kwargs.get(cache_kwarg(hf))
    if cache is None:
        cache = kwargs.get("past_key_values")
    past = int(cache.get_seq_length()) if cache is not None and hasattr(
        cache, "get_seq_length") else 0
    return Step(past, kwargs.get("attention_mask"))


# --- cache operations -------------------------------------------------------------------

def fork(cache: Any, length: int, batch: int) -> Any:
    """A new cache holding the first ``length`` positions of ``cache``, ``batch`` times."""
    from transformers import DynamicCache

    data = [(layer.keys[:, :, :length].expand(batch, -1, -1, -1).contiguous(),
             layer.values[:, :, :length].expand(batch, -1, -1, -1).contiguous())
            for layer in cache.layers]
    return DynamicCache(data)


def crop(cache: Any, length: int) -> None:
    """Keep the first ``length`` positions of ``cache`` (in place)."""
    n = cache.get_seq_length()
    if not 0 <= length <= n:
        raise MechReasonError(f"cannot crop a cache of {n} positions to {length}")
    if length == n:
        return
    with contextlib.suppress(ValueError):  # transformers 5.x: a negative count removes that many
        cache.crop(length - n)
    if cache.get_seq_length() != length:  # older releases: the length to keep
        cache.crop(length)
    assert cache.get_seq_length() == length


def select(cache: Any, rows: torch.Tensor) -> None:
    """Keep only ``rows`` of the batch (in place)."""
    cache.batch_select_indices(rows)


# --- sampling ---------------------------------------------------------------------------

def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    import torch

    gens = []
    for s in seeds:
        g = torch.Generator(device="cpu")
        g.manual_seed(int(s))
        gens.append(g)
    return gens


def sample(logits: Float[Tensor, "batch vocab"], cfg: SamplingConfig,
           gens: Sequence[torch.Generator]) -> Int[Tensor, " batch"]:
    """One token per row of ``logits`` (B, V): argmax at temperature 0; else
    temperature, top-p, then Gumbel-max with each row's own generator (one draw of
    ``V`` uniforms per row per step)."""
    import torch

    if cfg.temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() / cfg.temperature
    if cfg.top_p < 1:
        scaled = scaled.masked_fill(nucleus_drop(scaled.softmax(-1), cfg.top_p), -torch.inf)
    u = torch.stack([torch.rand(scaled.shape[-1], generator=g) for g in gens]).to(scaled.device)
    gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
    return (scaled + gumbel).argmax(-1)


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


# --- prefill and the decode loop --------------------------------------------------------

def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, *, left: bool = True,
              device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows padded to one width with ``pad_id`` on the left (decoding: every
    row's last token is the last column) or the right (scoring), and the attention mask."""
    import torch

    if not seqs or any(len(p) == 0 for p in seqs):
        raise MechReasonError("every prompt needs at least one token; got an empty prompt")
    width = max(len(p) for p in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, p in enumerate(seqs):
        cols = slice(width - len(p), width) if left else slice(0, len(p))
        ids[i, cols] = torch.tensor(list(p))
        mask[i, cols] = 1
    return ids.to(device), mask.to(device)


def left_pad(model: Model, prompts: Sequence[Sequence[int]]
             ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Left-padded (input_ids, attention_mask) on the model's device."""
    return pad_batch(prompts, model.pad_id, device=model.device)


class Batch(NamedTuple):
    """Decode state after a prefill: the cache, its 2-D mask (B, W), each row's next
    absolute position (B,), and the logits that choose each row's first new token."""

    cache: Any
    mask: torch.Tensor
    next_pos: torch.Tensor
    logits: torch.Tensor


def prefill(model: Model, prompts: Sequence[Sequence[int]]) -> Batch:
    """Run left-padded prompts once; the state :func:`decode_loop` continues from."""
    ids, mask = left_pad(model, prompts)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # absolute positions, pads at 0
    out = forward(model.hf, ids, mask=mask, positions=pos, logits_to_keep=1)
    assert out.logits is not None
    return Batch(out.cache, mask, pos[:, -1] + 1, out.logits[:, -1].float())


Choose = Callable[["torch.Tensor", list[int], list[list[int]]], list[int]]
"""``choose(logits (B_live, V), live_row_ids, tokens_so_far_by_row) -> next token per
live row``."""
Done = Callable[[int, list[int]], bool]
"""``done(row_id, tokens_so_far) -> True once the row is finished``."""


def decode_loop(model: Model, state: Batch, choose: Choose, done: Done) -> Iterator[tuple[int, list[int]]]:
    """Decode every row of ``state`` one token per step; yield ``(row, tokens)`` as each
    row finishes. Finished rows leave the batch (cache rows selected away), so later
    steps are cheaper; the hooks on the model fire for every step."""
    import torch

    cache, mask, pos, logits = state
    live = list(range(int(mask.shape[0])))
    tokens: list[list[int]] = [[] for _ in live]
    while True:
        nxt = choose(logits, live, tokens)
        keep = []
        for r, (row, t) in enumerate(zip(live, nxt)):
            tokens[row].append(int(t))
            if done(row, tokens[row]):
                yield row, tokens[row]
            else:
                keep.append(r)
        if not keep:
            return
        if len(keep) < len(live):
            idx = torch.tensor(keep, device=mask.device)
            select(cache, idx)
            mask, pos = mask[idx], pos[idx]
            live = [live[r] for r in keep]
            nxt = [nxt[r] for r in keep]
        step = torch.tensor(nxt, device=mask.device)[:, None]
        mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
        out = forward(model.hf, step, cache=cache, mask=mask, positions=pos[:, None], rows=live)
        assert out.logits is not None
        cache, pos, logits = out.cache, pos + 1, out.logits[:, -1].float()
