"""Hooks: every hook lives inside a context manager.

:func:`hooks_context` attaches hook functions to the model's named hook points
(:mod:`mechreason.model.hookpoints`; the Bridge's under ``backend="transformer-lens"``), all
or nothing, and removes them on exit, exceptions included. Hooks see and may replace
the activation: ``fn(activation) -> activation | None``. They fire for every forward of
``model.hf``: mechreason's engine, HF ``generate``, or a user's own loop.

:class:`StopForward` lets a hook end the forward pass early (capture stops after the
deepest hooked layer instead of running the rest of the model).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model

HookFn = Callable[["torch.Tensor"], "torch.Tensor | None"]


class StopForward(Exception):
    """Raised by a hook to end the forward pass once everything needed is captured."""


@contextlib.contextmanager
def hooks_context(model: Model, hooks: Mapping[str, HookFn | Sequence[HookFn]]) -> Iterator[None]:
    """Attach ``hooks`` (hook name -> fn or list of fns) for the duration of the block.

    Names are validated before anything is registered, so a typo registers nothing.
    """
    items: list[tuple[str, HookFn]] = []
    for name, fns in hooks.items():
        model.check_hook(name)
        items.extend((name, f) for f in (fns if isinstance(fns, Sequence) else [fns]))
    handles: list[Any] = []
    try:
        for name, fn in items:
            handles.append(model.points[name].add(fn))
        yield
    finally:
        for h in reversed(handles):
            h.remove()


def active_hook_count(model: Model) -> int:
    """How many of mechreason's hooks are attached anywhere in the model (tests use it):
    torch forward and pre-forward hooks whose function is mechreason's, on every module,
    plus attention-interface hooks. (transformers attaches hooks of its own, e.g. to
    record ``output_hidden_states``; those are not counted.)"""
    from mechreason.model.hookpoints import attention_hook_count

    mods = {id(m): m for m in model.hf.modules()}
    if model.tl_bridge is not None:
        mods.update((id(m), m) for m in model.tl_bridge.modules())
    ours = sum(_is_ours(fn) for m in mods.values()
               for fn in (*m._forward_hooks.values(), *m._forward_pre_hooks.values()))
    return ours + attention_hook_count(model.hf)


def _is_ours(fn: Any) -> bool:
    fn = getattr(fn, "__func__", fn)  # bound methods (the steering pre-hook)
    return str(getattr(fn, "__module__", "")).startswith("mechreason.")


def run_forward(model: Model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                **kw: Any) -> Any:
    """One forward pass of the wrapped HF model (no grad); ``StopForward`` ends it early
    and returns None."""
    import torch

    with torch.inference_mode():
        try:
            return model.hf(input_ids=input_ids, attention_mask=attention_mask, use_cache=False,
                            **kw)
        except StopForward:
            return None
