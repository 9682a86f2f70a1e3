"""The TransformerLens backend: boot TransformerLens's Bridge over the HF model, refuse one whose KV cache\nis broken, and expose its hook points as ours."""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError
from mechreason.model.hookpoints import HookPoint

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def boot_bridge(name: str, hf: PreTrainedModel, tok: PreTrainedTokenizerBase) -> TransformerBridge:
    """Boot the Bridge over ``hf``. The Bridge gets its own copy of the tokenizer (it
    re-creates one with BOS prepending), so ours keeps the HF convention."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge_tok = copy.deepcopy(tok)
    bridge_tok.init_kwargs["add_bos_token"] = True
    with _quiet("transformer_lens"):
        boot: Any = TransformerBridge.boot_transformers
        return boot(name, hf_model=hf, tokenizer=bridge_tok, dtype=hf.dtype)


def check_bridge_cache(hf: Any) -> None:
    """Refuse a Bridge whose attention ignores the KV cache (TransformerLens 3.9 with
    transformers >= 5.24, which renamed the cache argument): a 3-token prefill must
    leave 3 cached positions."""
    from importlib.metadata import version as _version

    import torch
    import transformers

    from mechreason.model.engine import forward

    ids = torch.zeros(1, 3, dtype=torch.long, device=next(hf.parameters()).device)
    seen = forward(hf, ids, use_cache=True).cache.get_seq_length()
    if seen != 3:
        raise MechReasonError(
            f"backend 'transformer-lens' (TransformerLens {_version('transformer-lens')}) does "
            f"not work with transformers {transformers.__version__}: its attention ignores the "
            f"KV cache ({seen} positions cached after a 3-token prefill), so generation would be "
            "garbage; use backend='hf' or transformers<5.24")


def bridge_point(name: str, point: Any) -> HookPoint:
    def add(fn: Any) -> Any:
        return point.register_forward_hook(lambda _m, _i, out: fn(out))
    return HookPoint(name, add)


@contextlib.contextmanager
def _quiet(logger: str):
    lg = logging.getLogger(logger)
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)
