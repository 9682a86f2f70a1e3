"""Hook points: TransformerLens hook names on the *unmodified* Hugging Face modules.

mechreason's default backend (``backend="hf"``) never replaces or wraps a module. Each
TransformerLens name (``blocks.{L}.hook_resid_post``, ...) is a plain torch forward or
forward-pre hook on a module found from the model's own tree, per architecture family
(:data:`FAMILIES`). A hook function sees the activation and may return a replacement
(``fn(x) -> x | None``), exactly as with TransformerLens.

=================================  ==========================================================
``hook_embed``                     output of the token embedding (Gemma: already scaled)
``blocks.{L}.hook_resid_pre``      the block's input
``blocks.{L}.hook_resid_mid``      ``resid_pre + attn_out``: the input of the norm before
                                   the MLP (sequential blocks only); a replacement
                                   changes the residual stream itself
``blocks.{L}.hook_resid_post``     the block's output
``blocks.{L}.hook_attn_out``       what attention adds to the residual (Gemma: after its
                                   post-attention norm, as in TransformerLens's own Gemma)
``blocks.{L}.hook_mlp_out``        what the MLP adds (Gemma: after its post-feed-forward norm)
``blocks.{L}.attn.hook_z``         the heads' outputs before the output projection,
                                   ``(batch, pos, n_heads * d_head)`` (alias ``attn.o.hook_in``)
``blocks.{L}.mlp.hook_post``       the MLP's hidden activation (input of its down projection)
``blocks.{L}.attn.hook_attn_scores`` pre-softmax scores ``(batch, head, query, key)``, masked
``blocks.{L}.attn.hook_pattern``   attention probabilities ``(batch, head, query, key)``
``ln_final.hook_out``              the final norm's output
=================================  ==========================================================

Attention scores and patterns do not exist outside the attention kernel, so they come
through transformers' attention-function interface: while such a hook is registered
the model runs :func:`_eager_attention` (registered as ``"mechreason_eager"``), which
computes attention the eager way and passes scores and pattern through the hooks; the
model's own implementation (SDPA, flash) is restored when the last one is removed.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    import torch
    from torch import nn

HookFn = Callable[["torch.Tensor"], "torch.Tensor | None"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Family:
    """Where a family's modules live (attribute paths, dotted, from the causal-LM model
    for the first three; from a block for the rest)."""

    name: str
    classes: tuple[str, ...]
    """``type(model).__name__`` values of the family."""
    embed: str
    layers: str
    final_norm: str
    attn: str
    """The attention module (it calls the attention-function interface)."""
    attn_out: str
    """The module whose output attention adds to the residual."""
    mlp_out: str
    """The module whose output the MLP adds to the residual."""
    ln2: str
    """The norm in front of the MLP (its input is ``resid_mid``)."""
    o_proj: str
    mlp_down: str
    parallel: bool = False
    """Attention and MLP read the same input (no ``resid_mid``)."""


_LLAMA: dict[str, Any] = dict(embed="model.embed_tokens", layers="model.layers", final_norm="model.norm",
              attn="self_attn", attn_out="self_attn", mlp_out="mlp", ln2="post_attention_layernorm",
              o_proj="self_attn.o_proj", mlp_down="mlp.down_proj")
FAMILIES: tuple[Family, ...] = (
    Family(name="llama", classes=("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM",
                                  "Qwen3ForCausalLM", "GemmaForCausalLM"), **_LLAMA),
    Family(name="gemma2/3", classes=("Gemma2ForCausalLM", "Gemma3ForCausalLM"),
           **{**_LLAMA, "attn_out": "post_attention_layernorm",
              "mlp_out": "post_feedforward_layernorm", "ln2": "pre_feedforward_layernorm"}),
    Family(name="gpt2", classes=("GPT2LMHeadModel",), embed="transformer.wte",
           layers="transformer.h", final_norm="transformer.ln_f", attn="attn", attn_out="attn",
           mlp_out="mlp", ln2="ln_2", o_proj="attn.c_proj", mlp_down="mlp.c_proj"),
    Family(name="gpt-neox", classes=("GPTNeoXForCausalLM",), embed="gpt_neox.embed_in",
           layers="gpt_neox.layers", final_norm="gpt_neox.final_layer_norm", attn="attention",
           attn_out="attention", mlp_out="mlp", ln2="post_attention_layernorm",
           o_proj="attention.dense",
           mlp_down="mlp.dense_4h_to_h", parallel=True),
)


def family_of(hf: Any) -> Family:
    """The family of an HF causal LM, or a clear error naming the supported ones."""
    cls = type(hf).__name__
    for fam in FAMILIES:
        if cls in fam.classes:
            if fam.name == "gpt-neox" and not getattr(hf.config, "use_parallel_residual", True):
                return dataclasses.replace(fam, parallel=False)
            return fam
    supported = ", ".join(f"{f.name} ({', '.join(f.classes)})" for f in FAMILIES)
    raise MechReasonError(
        f"architecture {cls!r} has no hook map in the 'hf' backend; supported families: "
        f"{supported}. Load it with backend='transformer-lens' instead.")


def _get(root: Any, path: str) -> Any:
    return functools.reduce(getattr, path.split("."), root)


def _first(x: Any) -> Any:
    return x[0] if isinstance(x, tuple) else x


def _replace_first(x: Any, new: Any) -> Any:
    return (new, *x[1:]) if isinstance(x, tuple) else new


class HookPoint:
    """One named activation: ``add(fn)`` attaches ``fn`` and returns a removable handle."""

    def __init__(self, name: str, add: Callable[[HookFn], Any]) -> None:
        self.name = name
        self._add = add

    def add(self, fn: HookFn) -> Any:
        return self._add(fn)


def _output_point(name: str, module: nn.Module) -> HookPoint:
    def add(fn: HookFn) -> Any:
        def hook(_m: Any, _args: Any, out: Any) -> Any:
            new = fn(_first(out))
            return None if new is None else _replace_first(out, new)
        return module.register_forward_hook(hook)
    return HookPoint(name, add)


def _input_point(name: str, module: nn.Module) -> HookPoint:
    def add(fn: HookFn) -> Any:
        def hook(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            new = fn(kwargs["hidden_states"])
            return None if new is None else (args, {**kwargs, "hidden_states": new})
        return module.register_forward_pre_hook(hook, with_kwargs=True)
    return HookPoint(name, add)


class _Handles:
    def __init__(self, *handles: Any) -> None:
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _mid_point(name: str, block: nn.Module, ln2: nn.Module) -> HookPoint:
    """``resid_mid`` is the input of the block's second norm (exactly the tensor the
    model computes). A replacement ``y`` feeds that norm and, through a correction on
    the block's output (``+ (y - resid_mid)``, run before any other output hook), the
    residual add after the MLP too: the residual itself becomes ``y``, not only the
    MLP's input."""
    def add(fn: HookFn) -> Any:
        delta: list[Any] = []

        def pre(_m: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            new = fn(x)
            if new is None:
                return None
            delta.append(new - x)
            return ((new, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})

        def out(_m: Any, _args: Any, output: Any) -> Any:
            if not delta:
                return None
            return _replace_first(output, _first(output) + delta.pop())
        return _Handles(ln2.register_forward_pre_hook(pre, with_kwargs=True),
                        block.register_forward_hook(out, prepend=True))
    return HookPoint(name, add)


# --- attention scores and patterns, through the attention-function interface ---------

ATTN_IMPL = "mechreason_eager"
_ATTN_HOOKS: weakref.WeakKeyDictionary[Any, dict[str, list[HookFn]]] = weakref.WeakKeyDictionary()
_SAVED_IMPL: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def _eager_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, scaling: float | None = None,
                     dropout: float = 0.0, softcap: float | None = None,
                     **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention with the scores and pattern passed through the module's hooks.
    query (B, H, Q, D); key / value (B, H_kv, K, D); returns ((B, Q, H, D), pattern)."""
    import torch

    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: each KV head serves `groups` query heads
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : key.shape[-2]]
    hooks = _ATTN_HOOKS.get(module, {})
    for fn in hooks.get("attn_scores", ()):
        scores = _apply(fn, scores)
    # at least float32 (as HF's eager path), and float64 when the model is float64
    pattern = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)
                            ).to(query.dtype)
    for fn in hooks.get("pattern", ()):
        pattern = _apply(fn, pattern)
    out = torch.matmul(pattern, value).transpose(1, 2).contiguous()  # (B, Q, H, D)
    return out, pattern


def _apply(fn: HookFn, x: torch.Tensor) -> torch.Tensor:
    new = fn(x)
    return x if new is None else new


@functools.cache
def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

    AttentionInterface.register(ATTN_IMPL, _eager_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTN_IMPL, eager_mask)


def _attn_point(name: str, hf: Any, attn: nn.Module, kind: str) -> HookPoint:
    def add(fn: HookFn) -> Any:
        _register_attention()
        per = _ATTN_HOOKS.setdefault(attn, {})
        per.setdefault(kind, []).append(fn)
        if hf not in _SAVED_IMPL:  # first attention hook on this model: go eager
            _SAVED_IMPL[hf] = hf.config._attn_implementation
            hf.config._attn_implementation = ATTN_IMPL
        return _AttnHandle(hf, attn, kind, fn)
    return HookPoint(name, add)


class _AttnHandle:
    def __init__(self, hf: Any, attn: Any, kind: str, fn: HookFn) -> None:
        self.hf, self.attn, self.kind, self.fn = hf, attn, kind, fn

    def remove(self) -> None:
        fns = _ATTN_HOOKS.get(self.attn, {}).get(self.kind, [])
        if self.fn in fns:
            fns.remove(self.fn)
        if self.hf in _SAVED_IMPL and not _model_has_attn_hooks(self.hf):
            self.hf.config._attn_implementation = _SAVED_IMPL.pop(self.hf)


def _model_has_attn_hooks(hf: Any) -> bool:
    return any(_ATTN_HOOKS.get(m, {}).get(k) for m in hf.modules() if m in _ATTN_HOOKS
               for k in ("pattern", "attn_scores"))


def attention_hook_count(hf: Any) -> int:
    """Attention-interface hooks attached to ``hf`` (tests use it)."""
    return sum(len(fns) for m in hf.modules() if m in _ATTN_HOOKS
               for fns in _ATTN_HOOKS[m].values())


# --- the registry ----------------------------------------------------------------------

def build_points(hf: Any) -> dict[str, HookPoint]:
    """Every hook point of ``hf`` by name (aliases share one point)."""
    fam = family_of(hf)
    pts: dict[str, HookPoint] = {}

    def put(names: tuple[str, ...], point: HookPoint) -> None:
        for n in names:
            pts[n] = point

    put(("hook_embed",), _output_point("hook_embed", _get(hf, fam.embed)))
    put(("ln_final.hook_out",), _output_point("ln_final.hook_out", _get(hf, fam.final_norm)))
    for i, block in enumerate(_get(hf, fam.layers)):
        b = f"blocks.{i}."
        put((b + "hook_resid_pre", b + "hook_in"), _input_point(b + "hook_resid_pre", block))
        put((b + "hook_resid_post", b + "hook_out"), _output_point(b + "hook_resid_post", block))
        put((b + "hook_attn_out",), _output_point(b + "hook_attn_out", _get(block, fam.attn_out)))
        put((b + "hook_mlp_out",), _output_point(b + "hook_mlp_out", _get(block, fam.mlp_out)))
        put((b + "attn.hook_z", b + "attn.o.hook_in"),
            _input_point(b + "attn.hook_z", _get(block, fam.o_proj)))
        put((b + "mlp.hook_post",), _input_point(b + "mlp.hook_post", _get(block, fam.mlp_down)))
        attn = _get(block, fam.attn)
        for kind in ("attn_scores", "pattern"):
            put((b + f"attn.hook_{kind}",), _attn_point(b + f"attn.hook_{kind}", hf, attn, kind))
        if not fam.parallel:
            put((b + "hook_resid_mid",),
                _mid_point(b + "hook_resid_mid", block, _get(block, fam.ln2)))
    return pts
