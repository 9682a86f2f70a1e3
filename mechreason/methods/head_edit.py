"""Head editing (ThinkEdit; Sun et al. 2025): find the attention heads that write
along a direction and project the direction out of their output weights.

A head's write at one token is ``W_O[:, cols_h] @ z_h`` (HF ``o_proj`` columns of head
``h``; TransformerLens ``W_O[h]``), so its component along a unit direction ``u`` is
``z_h . (W_O[:, cols_h]^T u)``. :func:`rank_heads` averages that over a span of tokens
(ThinkEdit uses the reasoning span, with the long-minus-short reasoning direction);
:func:`edit_heads` replaces ``W_O[:, cols_h]`` by ``(I - u u^T) W_O[:, cols_h]`` for the
chosen heads, so they can no longer write along ``u``; the edit keeps the original
columns and is undone exactly by :meth:`HeadEdit.revert` (or on leaving ``with``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from einops import rearrange

from mechreason.errors import MechReasonError
from mechreason.model.hooks import hooks_context

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model


class HeadScore(NamedTuple):
    """One head's mean write along the direction over the span."""

    layer: int
    head: int
    score: float
    """Mean over span tokens of the head's output projected on the unit direction."""


def o_proj(model: Model, layer: int) -> Any:
    """The HF output projection of ``layer``'s attention (Llama, Qwen, Gemma, Mistral)."""
    try:
        return model.hf.model.layers[layer].self_attn.o_proj
    except (AttributeError, IndexError) as e:
        raise MechReasonError(f"cannot find layer {layer}'s attention o_proj in {model.name} "
                              "(expected model.layers[L].self_attn.o_proj)") from e


def _head_dim(model: Model) -> int:
    hd = getattr(model.hf.config, "head_dim", None)
    return int(hd) if hd else model.d_model // model.n_heads


def _unit_directions(model: Model, direction: torch.Tensor, layers: Sequence[int]
                     ) -> dict[int, torch.Tensor]:
    """One unit vector per layer: ``direction`` is (d,) for all layers or (n_layers, d)."""
    import torch

    if direction.shape[-1] != model.d_model or direction.dim() not in (1, 2):
        raise MechReasonError(f"direction has shape {tuple(direction.shape)}; expected "
                              f"({model.d_model},) or ({model.n_layers}, {model.d_model})")
    if not torch.isfinite(direction).all() or (direction.norm(dim=-1) == 0).any():
        raise MechReasonError("direction contains NaN/inf or a zero vector")
    out = {}
    for L in layers:
        v = direction if direction.dim() == 1 else direction[L]
        out[L] = (v / v.norm()).to(model.device, model.dtype)
    return out


def rank_heads(model: Model, prompts: Sequence[Sequence[int]], direction: torch.Tensor, *,
               spans: Sequence[tuple[int, int]] | None = None,
               layers: Sequence[int] | None = None) -> list[HeadScore]:
    """Every head's mean write along ``direction`` over the token ``spans`` (one
    ``(start, end)`` per prompt; default: all tokens), highest first."""
    import torch

    layers = list(range(model.n_layers)) if layers is None else list(layers)
    if spans is not None and len(spans) != len(prompts):
        raise MechReasonError(f"got {len(spans)} spans for {len(prompts)} prompts")
    units = _unit_directions(model, direction, layers)
    hd, nh = _head_dim(model), model.n_heads
    # per layer: (n_heads, head_dim) readout of each head's z along u
    with torch.no_grad():  # the weights require grad; the scores must not carry a graph
        readout = {L: rearrange(o_proj(model, L).weight.T @ units[L], "(h d) -> h d", h=nh)
                   for L in layers}
    sums = {L: torch.zeros(nh, dtype=torch.float64) for L in layers}
    count = 0
    for i, ids in enumerate(prompts):
        start, end = spans[i] if spans is not None else (0, len(ids))
        if not 0 <= start < end <= len(ids):
            raise MechReasonError(f"span {(start, end)} is outside prompt {i} of length {len(ids)}")
        got: dict[int, torch.Tensor] = {}
        hooks = {f"blocks.{L}.attn.o.hook_in": _grab(got, L) for L in layers}
        with hooks_context(model, hooks), torch.inference_mode():
            model.hf(input_ids=torch.tensor([list(ids)], device=model.device), use_cache=False)
        for L in layers:
            z = rearrange(got[L][0, start:end], "t (h d) -> t h d", h=nh, d=hd)
            sums[L] += torch.einsum("thd,hd->h", z, readout[L]).double().cpu()
        count += end - start
    scores = [HeadScore(L, h, float(sums[L][h] / count)) for L in layers for h in range(nh)]
    return sorted(scores, key=lambda s: -s.score)


def _grab(store: dict[int, Any], layer: int) -> Any:
    def fn(x: Any) -> None:
        store[layer] = x.detach()
    return fn


class HeadEdit:
    """Projects a direction out of chosen heads' output weights; reversible."""

    def __init__(self, model: Model, heads: Sequence[tuple[int, int]],
                 direction: torch.Tensor) -> None:
        if not heads:
            raise MechReasonError("edit_heads needs at least one (layer, head)")
        nh = model.n_heads
        bad = [h for h in heads if not (0 <= h[0] < model.n_layers and 0 <= h[1] < nh)]
        if bad:
            raise MechReasonError(f"heads {bad} out of range: layers 0..{model.n_layers - 1}, "
                                  f"heads 0..{nh - 1}")
        self.model, self.heads = model, [(int(L), int(h)) for L, h in heads]
        self.units = _unit_directions(model, direction, sorted({L for L, _ in self.heads}))
        self._saved: dict[tuple[int, int], torch.Tensor] = {}

    def apply(self) -> HeadEdit:
        import torch

        if self._saved:
            raise MechReasonError("this edit is already applied")
        hd = _head_dim(self.model)
        with torch.no_grad():
            for L, h in self.heads:
                w = o_proj(self.model, L).weight  # (d_model, n_heads * head_dim)
                cols = slice(h * hd, (h + 1) * hd)
                self._saved[(L, h)] = w[:, cols].clone()
                u = self.units[L]
                w[:, cols] -= torch.outer(u, u @ w[:, cols])
        return self

    def revert(self) -> None:
        import torch

        hd = _head_dim(self.model)
        with torch.no_grad():
            for (L, h), old in self._saved.items():
                o_proj(self.model, L).weight[:, h * hd:(h + 1) * hd] = old
        self._saved.clear()

    def __enter__(self) -> HeadEdit:
        return self.apply()

    def __exit__(self, *exc: Any) -> None:
        self.revert()


def edit_heads(model: Model, heads: Sequence[tuple[int, int]] | Sequence[HeadScore],
               direction: torch.Tensor) -> HeadEdit:
    """Project ``direction`` out of each head's output weights. Use as ``with
    edit_heads(...):`` (reverted on exit) or call ``.apply()`` / ``.revert()``."""
    pairs = [(h[0], h[1]) for h in heads]
    return HeadEdit(model, pairs, direction)
