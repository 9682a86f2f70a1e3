"""Thought anchors, stage 2: receiver heads (Bogdan, Macar, Nanda, Conmy 2025,
"Thought Anchors", section 4).

Some attention heads focus later sentences' attention onto a few "broadcasting"
sentences. Per trace, per layer and head: token attention averaged into a
sentence-by-sentence matrix; each sentence's vertical score is the mean attention it
receives from sentences at least ``proximity_ignore`` (4) later; a head's kurtosis
(Fisher) across sentences says how concentrated those scores are. Kurtosis averaged
over traces ranks heads; the top k (20, layer 0 skipped) are receiver heads, and a
sentence's receiver score is its mean vertical score over them. Split-half reliability
correlates the head kurtoses of random halves of the traces.

Memory: a hook on each ``blocks.{L}.attn.hook_pattern`` reduces that layer's
(heads, T, T) pattern to (heads, N, N) as soon as it exists, so at most one layer's
attention is alive at a time; :func:`sentence_attention_reference` materialises every
layer's attention first (the naive way, for tests and the memory benchmark).
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from mechreason.anchors.trace import AnchorTrace
from mechreason.errors import MechReasonError
from mechreason.model.hooks import hooks_context

if TYPE_CHECKING:
    import torch
    from jaxtyping import Float
    from torch import Tensor

    from mechreason.model.loading import Model

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    """Receiver-head settings (Thought Anchors defaults)."""

    proximity_ignore: int = 4
    """Vertical scores ignore query sentences fewer than this many sentences later."""
    top_k: int = 20
    """How many receiver heads to keep."""
    skip_layers: tuple[int, ...] = (0,)
    """Layers never chosen as receiver heads."""
    split_halves: int = 200
    """Random splits of the traces for split-half reliability."""
    seed: int = 0
    """Seed of the random splits."""

    def __post_init__(self) -> None:
        if self.proximity_ignore < 1:
            raise MechReasonError(f"proximity_ignore must be >= 1, got {self.proximity_ignore}")
        if self.top_k < 1:
            raise MechReasonError(f"top_k must be >= 1, got {self.top_k}")


def _averager(trace: AnchorTrace, device) -> torch.Tensor:
    """(N, T): row i averages the tokens of sentence i."""
    import torch

    s = torch.zeros(trace.n, len(trace.ids), device=device)
    for i, (a, b) in enumerate(trace.spans):
        s[i, a:b] = 1.0 / (b - a)
    return s


def _reduce(pattern: torch.Tensor, avg: torch.Tensor) -> torch.Tensor:
    """(1, H, T, T) token attention -> (H, N, N) sentence attention (query, key)."""
    p = pattern[0].float()
    return avg @ p @ avg.T  # (N, T) @ (H, T, T) @ (T, N)


def sentence_attention(model: Model, trace: AnchorTrace
                       ) -> Float[Tensor, "layer head query_sentence key_sentence"]:
    """(L, H, N, N) sentence-averaged attention, reduced layer by layer in hooks."""
    import torch

    avg = _averager(trace, model.device)
    out: list[torch.Tensor | None] = [None] * model.n_layers

    def make(layer: int):
        def hook(pattern: torch.Tensor) -> None:
            out[layer] = _reduce(pattern, avg).cpu()
        return hook

    hooks = {f"blocks.{L}.attn.hook_pattern": make(L) for L in range(model.n_layers)}
    x = torch.tensor([list(trace.ids)], device=model.device)
    with hooks_context(model, hooks), torch.inference_mode():
        _decoder_forward(model, x)
    return torch.stack([t for t in out if t is not None])


def _decoder_forward(model: Model, x: torch.Tensor) -> None:
    # The decoder alone: the unembedding's (T, vocab) logits are not needed.
    dec = model.hf.model if hasattr(model.hf, "model") else model.hf.get_decoder()
    dec(input_ids=x, use_cache=False)


def sentence_attention_reference(model: Model, trace: AnchorTrace
                                 ) -> Float[Tensor, "layer head query_sentence key_sentence"]:
    """The same, after keeping every layer's full (H, T, T) attention (memory-hungry)."""
    import torch

    kept: list[torch.Tensor] = []
    hooks = {f"blocks.{L}.attn.hook_pattern": (lambda p: kept.append(p.clone()))
             for L in range(model.n_layers)}
    x = torch.tensor([list(trace.ids)], device=model.device)
    with hooks_context(model, hooks), torch.inference_mode():
        _decoder_forward(model, x)
    avg = _averager(trace, model.device)
    return torch.stack([_reduce(p, avg).cpu() for p in kept])


def vertical_scores(sent_attn: Float[Tensor, "layer head query_sentence key_sentence"],
                    proximity_ignore: int = 4) -> np.ndarray:
    """(L, H, N) mean attention each key sentence receives from query sentences at
    least ``proximity_ignore`` later; NaN where there are none."""
    a = sent_attn.double().numpy()
    n = a.shape[-1]
    q, k = np.indices((n, n))
    valid = (q - k) >= proximity_ignore
    a = np.where(valid, a, np.nan)
    count = valid.sum(0)  # (N,) rows per key
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, np.nansum(a, axis=-2) / np.maximum(count, 1), np.nan)


def fisher_kurtosis(x: np.ndarray) -> np.ndarray:
    """Fisher (excess) kurtosis over the last axis, ignoring NaN (biased moments,
    as ``scipy.stats.kurtosis(x, axis=-1, nan_policy='omit')``)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row gives NaN
        mean = np.nanmean(x, axis=-1, keepdims=True)
        d = x - mean
        m2 = np.nanmean(d ** 2, axis=-1)
        m4 = np.nanmean(d ** 4, axis=-1)
        return m4 / m2 ** 2 - 3.0


class TraceReceivers(NamedTuple):
    """One trace's receiver statistics."""

    vertical: np.ndarray
    """(L, H, N) vertical scores."""
    kurtosis: np.ndarray
    """(L, H) kurtosis of the vertical scores across sentences."""


def trace_receivers(model: Model, trace: AnchorTrace, cfg: ReceiverConfig) -> TraceReceivers:
    vert = vertical_scores(sentence_attention(model, trace), cfg.proximity_ignore)
    return TraceReceivers(vert, fisher_kurtosis(vert))


def top_heads(kurtosis: np.ndarray, k: int, skip_layers: Sequence[int] = (0,)) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs of highest kurtosis, skipping ``skip_layers``."""
    kurt = np.array(kurtosis, dtype=float)
    kurt[list(skip_layers)] = np.nan
    flat = np.where(np.isnan(kurt), -np.inf, kurt).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    out = []
    for o in order:
        if np.isfinite(flat[o]):
            layer, head = np.unravel_index(o, kurt.shape)
            out.append((int(layer), int(head)))
    return out


def receiver_scores(vertical: np.ndarray, heads: Sequence[tuple[int, int]]) -> np.ndarray:
    """(N,) each sentence's mean vertical score over ``heads`` (NaN where undefined)."""
    return np.mean([vertical[layer, h] for layer, h in heads], axis=0)


class SplitHalf(NamedTuple):
    """Split-half reliability of head kurtosis across traces."""

    r_mean: float
    """Mean Pearson r over random splits (heads of skipped layers excluded)."""
    r_lo: float
    r_hi: float
    """2.5% and 97.5% quantiles of r over splits."""
    spearman_brown: float
    """The full-sample reliability implied by ``r_mean``: 2r / (1 + r)."""
    top_k_overlap: float
    """Mean fraction of top-k heads the two halves share."""


def split_half(kurtoses: np.ndarray, cfg: ReceiverConfig) -> SplitHalf:
    """``kurtoses``: (n_traces, L, H). Needs at least 4 traces."""
    n = kurtoses.shape[0]
    if n < 4:
        raise MechReasonError(f"split-half reliability needs >= 4 traces, got {n}")
    rng = np.random.default_rng(cfg.seed)
    keep = [L for L in range(kurtoses.shape[1]) if L not in cfg.skip_layers]
    rs, overlaps = [], []
    for _ in range(cfg.split_halves):
        perm = rng.permutation(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a head NaN in a whole half
            a = np.nanmean(kurtoses[perm[: n // 2]], 0)
            b = np.nanmean(kurtoses[perm[n // 2:]], 0)
        fa, fb = a[keep].ravel(), b[keep].ravel()
        ok = np.isfinite(fa) & np.isfinite(fb)
        if ok.sum() < 3 or fa[ok].std() == 0 or fb[ok].std() == 0:
            continue  # no correlation to take on this split
        rs.append(float(np.corrcoef(fa[ok], fb[ok])[0, 1]))
        ta = set(top_heads(a, cfg.top_k, cfg.skip_layers))
        tb = set(top_heads(b, cfg.top_k, cfg.skip_layers))
        overlaps.append(len(ta & tb) / max(len(ta), 1))
    if not rs:
        raise MechReasonError("split-half reliability: no split had 3 heads with a finite, "
                              "varying kurtosis in both halves")
    r = float(np.mean(rs))
    return SplitHalf(r, float(np.quantile(rs, 0.025)), float(np.quantile(rs, 0.975)),
                     2 * r / (1 + r), float(np.mean(overlaps)))


class Receivers(NamedTuple):
    """Receiver heads over a set of traces."""

    kurtosis: np.ndarray
    """(L, H) mean kurtosis over traces."""
    heads: list[tuple[int, int]]
    """Top-k receiver heads, best first."""
    scores: list[np.ndarray]
    """Per trace, (N,) receiver scores."""
    reliability: SplitHalf | None
    """Split-half reliability (None with fewer than 4 traces long enough to score)."""


def analyze_receivers(model: Model, traces: Sequence[AnchorTrace],
                      cfg: ReceiverConfig | None = None) -> Receivers:
    """Receiver heads over ``traces`` and every trace's receiver scores."""
    cfg = cfg or ReceiverConfig()
    bad = [L for L in cfg.skip_layers if not 0 <= L < model.n_layers]
    if bad:
        raise MechReasonError(f"skip_layers {bad} out of range 0..{model.n_layers - 1}")
    # A kurtosis needs two vertical scores: keys with a query >= proximity_ignore later.
    need = cfg.proximity_ignore + 2
    usable = [i for i, t in enumerate(traces) if t.n >= need]
    if not usable:
        longest = max((t.n for t in traces), default=0)
        raise MechReasonError(
            f"receiver heads need a trace of at least {need} sentences (vertical scores skip "
            f"the {cfg.proximity_ignore} nearest); the longest of {len(traces)} has {longest}")
    per = [trace_receivers(model, t, cfg) for t in traces]
    kurts = np.stack([per[i].kurtosis for i in usable])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a head NaN in every trace
        mean = np.nanmean(kurts, 0)
    heads = top_heads(mean, cfg.top_k, cfg.skip_layers)
    if not heads:
        raise MechReasonError("no head has a finite kurtosis outside skip_layers "
                              f"{list(cfg.skip_layers)}: no receiver heads to rank")
    scores = [receiver_scores(p.vertical, heads) for p in per]
    rel = None
    if len(usable) >= 4:
        try:
            rel = split_half(kurts, cfg)
        except MechReasonError as e:  # reliability is a diagnostic: say why it is missing
            log.warning("receiver heads: %s", e)
    return Receivers(mean, heads, scores, rel)

