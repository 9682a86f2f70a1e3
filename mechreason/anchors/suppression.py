"""Thought anchors, stage 3: attention suppression (Bogdan, Macar, Nanda, Conmy 2025,
"Thought Anchors", section 5).

For each sentence i, every query in every layer and head is stopped from attending to
i's key span (the scores are set to -inf before the softmax); the KL divergence of
every later token's next-token distribution from the unmasked run measures how much
the rest of the trace depends on i directly. ``matrix[i, j]`` is the mean over the
tokens of target sentence j > i of ``log(max(KL, floor))``; entries with j <= i are NaN.

Two paths give the same matrix:

- :func:`suppression_reference`: the literal method, one full forward per sentence
  with a hook on every ``blocks.{L}.attn.hook_attn_scores``;
- :func:`suppression_matrix`: masked keys receive exactly zero weight, so sentence i's
  own tokens can influence nothing after it and need not be run at all, and tokens
  before it are unchanged, so their KV cache is the unmasked run's. Each suppressed run
  is then the suffix after sentence i fed on the unmasked cache cropped to i's start
  (RoPE positions kept), and the suffixes of several sentences share one batch (the
  cache cropped to the batch's longest prefix, a gap in the attention mask for shorter
  ones, right padding for the suffixes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, NamedTuple

from mechreason.anchors.trace import AnchorTrace
from mechreason.errors import MechReasonError
from mechreason.model import engine
from mechreason.model.hooks import hooks_context

if TYPE_CHECKING:
    import torch
    from jaxtyping import Float
    from torch import Tensor

    from mechreason.model.loading import Model


@dataclasses.dataclass(frozen=True, kw_only=True)
class SuppressionConfig:
    """Attention-suppression settings."""

    batch_size: int = 8
    """Suppressed sentences run together in one forward."""
    kl_floor: float = 1e-10
    """KL values are floored here before the log."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise MechReasonError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.kl_floor > 0:
            raise MechReasonError(f"kl_floor must be > 0, got {self.kl_floor}")


class Suppression(NamedTuple):
    """Result of attention suppression over one trace (N sentences, T tokens)."""

    matrix: Float[Tensor, "source target"]
    """(N, N): mean log-KL over target sentence j's tokens when i is masked; NaN for j <= i."""
    mean_kl: Float[Tensor, "source target"]
    """(N, N): mean KL (not logged), NaN for j <= i."""
    token_kl: Float[Tensor, "source token"]
    """(N, T): KL at every token position when sentence i is masked: 0 before i (exactly:
    those tokens cannot see i), NaN inside i (not measured)."""


def _logits(model: Model, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.hf.get_output_embeddings()(hidden)
    cap = getattr(model.hf.config, "final_logit_softcapping", None)
    return logits if not cap else cap * (logits / cap).tanh()


def _kl_rows(base_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(base || other) per row: ``base_logp`` and ``logits`` are (L, V)."""
    logq = logits.double().log_softmax(-1)
    return (base_logp.exp() * (base_logp - logq)).sum(-1).clamp_min(0)


def _base_run(model: Model, ids: Sequence[int]):
    import torch

    x = torch.tensor([list(ids)], device=model.device)
    out = engine.forward(model.hf, x, decoder_only=True)
    assert out.hidden is not None
    with torch.inference_mode():
        logp = _logits(model, out.hidden[0]).double().log_softmax(-1)
    return out.cache, logp


def suppressed_logits(model: Model, ids: Sequence[int],
                      span: tuple[int, int] | None) -> torch.Tensor:
    """(T, V) logits of one full forward with keys ``[span)`` masked in every layer and
    head (the hook path; queries inside the span still see the keys before it).
    ``span=None`` masks nothing but runs the same (eager) attention path, the unmasked
    run to compare against bit for bit."""
    import torch

    if span is not None and not 0 < span[0] < span[1] <= len(ids):
        raise MechReasonError(f"span {span} must satisfy 0 < start < end <= {len(ids)}")

    def mask(scores: torch.Tensor) -> torch.Tensor | None:  # (B, H, Q, K)
        if span is None:
            return None
        scores = scores.clone()
        scores[..., span[0]:span[1]] = -torch.inf
        return scores

    names = {f"blocks.{layer}.attn.hook_attn_scores": mask for layer in range(model.n_layers)}
    x = torch.tensor([list(ids)], device=model.device)
    with hooks_context(model, names), torch.inference_mode():
        return model.hf(input_ids=x).logits[0]


def _finish(trace: AnchorTrace, token_kl: torch.Tensor, floor: float) -> Suppression:
    import torch

    n = trace.n
    matrix = torch.full((n, n), math.nan, dtype=torch.float64)
    mean = torch.full((n, n), math.nan, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            kl = token_kl[i, trace.spans[j][0]:trace.spans[j][1]].double()
            matrix[i, j] = kl.clamp_min(floor).log().mean()
            mean[i, j] = kl.mean()
    return Suppression(matrix, mean, token_kl)


def suppression_reference(model: Model, trace: AnchorTrace,
                          cfg: SuppressionConfig | None = None) -> Suppression:
    """The naive path: one full forward per sentence with masked attention scores."""
    import torch

    cfg = cfg or SuppressionConfig()
    ids = trace.ids
    base = suppressed_logits(model, ids, None).double().log_softmax(-1)
    token_kl = torch.full((trace.n, len(ids)), math.nan, dtype=torch.float64)
    for i, (a, b) in enumerate(trace.spans):
        logits = suppressed_logits(model, ids, trace.spans[i])
        token_kl[i, :a] = _kl_rows(base[:a], logits[:a])
        if b < len(ids):
            token_kl[i, b:] = _kl_rows(base[b:], logits[b:])
    return _finish(trace, token_kl, cfg.kl_floor)


def suppression_matrix(model: Model, trace: AnchorTrace,
                       cfg: SuppressionConfig | None = None) -> Suppression:
    """The batched, prefix-reusing path (see the module docstring)."""
    import torch

    cfg = cfg or SuppressionConfig()
    ids, T = trace.ids, len(trace.ids)
    full, base = _base_run(model, ids)
    token_kl = torch.full((trace.n, T), math.nan, dtype=torch.float64)
    for i, (a, _b) in enumerate(trace.spans):
        token_kl[i, :a] = 0.0  # the unmasked run's own cache: unaffected by construction
    todo = [i for i in range(trace.n) if trace.spans[i][1] < T]
    for batch in _batches(todo, cfg.batch_size):
        for i, kl in zip(batch, _suffix_batch(model, trace, full, base, batch)):
            token_kl[i, trace.spans[i][1]:] = kl
    return _finish(trace, token_kl, cfg.kl_floor)


def _batches(items: list[int], size: int) -> Iterator[list[int]]:
    for k in range(0, len(items), size):
        yield items[k:k + size]


def _suffix_batch(model: Model, trace: AnchorTrace, full, base: torch.Tensor,
                  batch: list[int]) -> list[torch.Tensor]:
    """KL rows for the suffixes after each sentence in ``batch``, run together."""
    import torch

    dev, T = model.device, len(trace.ids)
    starts = [trace.spans[i][0] for i in batch]
    ends = [trace.spans[i][1] for i in batch]
    width, longest = max(starts), max(T - e for e in ends)
    x = torch.full((len(batch), longest), model.pad_id, dtype=torch.long, device=dev)
    pos = torch.zeros((len(batch), longest), dtype=torch.long, device=dev)
    mask = torch.zeros((len(batch), width + longest), dtype=torch.long, device=dev)
    ids = torch.tensor(trace.ids, device=dev)
    for r, (a, e) in enumerate(zip(starts, ends)):
        x[r, :T - e] = ids[e:]
        pos[r] = torch.arange(e, e + longest, device=dev)
        mask[r, :a] = 1  # the prefix before sentence i; the gap up to `width` stays masked
        mask[r, width:width + T - e] = 1
    cache = engine.fork(full, width, len(batch))
    hidden = engine.forward(model.hf, x, cache=cache, mask=mask, positions=pos,
                            decoder_only=True).hidden
    assert hidden is not None
    with torch.inference_mode():
        return [_kl_rows(base[e:], _logits(model, hidden[r, :T - e])) for r, e in enumerate(ends)]
