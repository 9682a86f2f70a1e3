"""Directions, stage 4: reading a direction.

- :func:`logit_lens`: the tokens a direction promotes and suppresses through the
  unembedding (nostalgebraist 2020's logit lens, applied to a direction as in Venhoff et
  al. 2025a and the steering-vector literature). Choice: the direction is passed through
  the final norm's linear part (its gain, and the centring of a LayerNorm) before the
  unembedding, because the model only ever reads the residual through that norm; the
  division by the residual's RMS is dropped (one positive scalar, so the ranking is that
  of ``lm_head(final_norm(direction))``), and so is a LayerNorm's bias (the same for
  every direction).
- :func:`cosine_matrix`: pairwise cosine similarity of named directions.
- :func:`sentence_projections` / :func:`project_trace`: each sentence's mean projection
  onto the unit direction, the per-sentence view a report joins with attribution.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    from mechreason.activations import ActivationStore
    from mechreason.model.loading import Model

_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm")


class TokenScore(NamedTuple):
    token: str
    id: int
    score: float
    """Logit change per unit of the direction (before the final norm's 1/RMS)."""


class LensResult(NamedTuple):
    promoted: list[TokenScore]
    suppressed: list[TokenScore]


def final_norm(model: Model) -> torch.nn.Module:
    """The HF model's final norm (Llama/Gemma/Qwen ``model.norm``, GPT-2 ``ln_f``, ...)."""
    base = model.hf.base_model
    for name in _NORM_NAMES:
        mod = getattr(base, name, None)
        if isinstance(mod, torch.nn.Module):
            return mod
    raise MechReasonError(f"cannot find the final norm of {type(model.hf).__name__} (looked "
                          f"for {_NORM_NAMES}); call logit_lens with apply_norm=False")


def norm_linear_part(norm: torch.nn.Module, v: Float[Tensor, " d"]) -> Float[Tensor, " d"]:
    """``v`` through the norm's gain (and LayerNorm centring), without 1/RMS or bias."""
    weight = getattr(norm, "weight", None)
    if isinstance(norm, torch.nn.LayerNorm):
        v = v - v.mean()
    if weight is None:
        return v
    gain = weight.detach().float().cpu()
    if "gemma" in type(norm).__name__.lower():  # Gemma norms scale by (1 + weight)
        gain = 1.0 + gain
    return v * gain


def logit_lens(model: Model, direction: Float[Tensor, " d"], *, k: int = 10,
               apply_norm: bool = True) -> LensResult:
    """Top ``k`` promoted and suppressed tokens of ``direction`` (see the module docstring)."""
    v = _check_vector(direction, model.d_model)
    if apply_norm:
        v = norm_linear_part(final_norm(model), v)
    w_u = model.hf.get_output_embeddings().weight.detach().float().cpu()  # (vocab, d)
    scores = w_u @ v  # (vocab,)
    k = min(k, scores.numel())
    top, bottom = torch.topk(scores, k), torch.topk(-scores, k)
    tok = model.tokenizer
    return LensResult(
        promoted=[TokenScore(str(tok.decode([i])), i, float(scores[i])) for i in top.indices.tolist()],
        suppressed=[TokenScore(str(tok.decode([i])), i, float(scores[i]))
                    for i in bottom.indices.tolist()])


def cosine_matrix(vectors: Mapping[str, Tensor]) -> tuple[list[str], Float[Tensor, "n n"]]:
    """Names and their pairwise cosine similarities."""
    names = list(vectors)
    if not names:
        raise MechReasonError("no directions to compare")
    widths = {int(v.shape[-1]) for v in vectors.values()}
    if len(widths) != 1:
        raise MechReasonError(f"directions have different widths {sorted(widths)}")
    m = torch.stack([_check_vector(vectors[n], None) for n in names]).double()
    unit = m / m.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return names, (unit @ unit.T).float()


def sentence_projections(acts: Float[Tensor, "pos d"], spans: Sequence[tuple[int, int]],
                         direction: Float[Tensor, " d"]) -> Float[Tensor, " sentence"]:
    """Mean over each span's tokens of ``acts @ unit(direction)``."""
    u = _unit(_check_vector(direction, acts.shape[-1]))
    proj = acts.double() @ u.double()
    out = []
    for s, e in spans:
        if not 0 <= s < e <= len(proj):
            raise MechReasonError(f"sentence span [{s}, {e}) is outside 0..{len(proj)}")
        out.append(proj[s:e].mean())
    return torch.stack(out).float() if out else torch.zeros(0)


def project_trace(store: ActivationStore, item: str, hook: str,
                  direction: Float[Tensor, " d"]) -> list[dict[str, Any]]:
    """Per sentence of one captured trace: its index, phase, labels, token count and mean
    projection onto the unit direction (token rows, or the store's sentence means)."""
    entry = store.item(item)
    rows = store.select(item=item)
    info = [store.rows[r] for r in rows]
    acts = store.load(hook, rows)  # (rows, d)
    u = _unit(_check_vector(direction, store.d_model))
    proj = acts.double() @ u.double()
    by_sentence: dict[int, list[float]] = {}
    phase: dict[int, Any] = {}
    for row, p in zip(info, proj.tolist()):
        if row.get("sentence") is not None:
            by_sentence.setdefault(row["sentence"], []).append(p)
            phase.setdefault(row["sentence"], row.get("phase"))
    labels = entry.get("sentence_labels") or []
    return [{"sentence": s, "phase": phase[s], "labels": labels[s] if s < len(labels) else [],
             "n_rows": len(v), "projection": sum(v) / len(v)}
            for s, v in sorted(by_sentence.items())]


def _check_vector(v: Tensor, d: int | None) -> Tensor:
    if v.ndim != 1:
        raise MechReasonError(f"a direction must be 1-D, got shape {tuple(v.shape)}")
    if d is not None and v.shape[0] != d:
        raise MechReasonError(f"direction has width {v.shape[0]}, the model/activations {d}")
    if not bool(torch.isfinite(v).all()):
        raise MechReasonError("direction has NaN or inf values")
    return v.detach().float().cpu()


def _unit(v: Tensor) -> Tensor:
    n = v.norm()
    if not float(n) > 0:
        raise MechReasonError("direction is the zero vector")
    return v / n
