"""Tiny random models (one per supported family) and their byte-level tokenizer, for\ntests; and random-weight stand-ins with a real architecture's shape, for benchmarks."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.model.weights import save_atomically

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


TINY_CONFIG: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=2048, rms_norm_eps=1e-5,
                                   tie_word_embeddings=False)


_TINY_VERSION = "1"  # bump when the tiny tokenizer's construction changes


_TINY_SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]


_TINY_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(cache: Path) -> PreTrainedTokenizerBase:
    """A byte-level tokenizer (one token per byte, five specials, a chat template),
    saved once to the cache so it loads like any pretrained tokenizer."""
    from transformers import AutoTokenizer

    target = cache / f"tiny-tokenizer-v{_TINY_VERSION}"
    if not (target / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {s: i for i, s in enumerate(_TINY_SPECIALS)}
        for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[ch] = len(vocab)
        core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        core.decoder = decoders.ByteLevel()
        tok = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<|bos|>", eos_token="<|im_end|>",
            pad_token="<|pad|>", additional_special_tokens=["<|im_start|>", "<|eos|>"])
        tok.chat_template = _TINY_TEMPLATE
        save_atomically(target, None, tok, {"tiny_version": _TINY_VERSION})
    return AutoTokenizer.from_pretrained(target)


def tiny_random(seed: int, cache: Path, config: dict[str, Any] | None = None,
                 family: str = "llama") -> tuple[Any, PreTrainedTokenizerBase, str]:
    """A seeded random model of ``family`` (``TINY_CONFIG`` unless ``config``) with the
    byte tokenizer."""
    import torch
    import transformers

    config_cls, model_cls = TINY_FAMILIES[family]
    tok = tiny_tokenizer(cache)
    kw = {"vocab_size": len(tok), **(config or TINY_CONFIG)}
    cfg = getattr(transformers, config_cls)(bos_token_id=tok.bos_token_id,
                                            eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = getattr(transformers, model_cls)(cfg)
    hf.generation_config.pad_token_id = tok.pad_token_id
    tag = "tiny-random" if config is None else \
        "random:" + hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:12]
    if family != "llama":
        tag += f"-{family}"
    return hf, tok, f"{tag}:seed={seed}:v{_TINY_VERSION}"


TINY_FAMILIES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "gemma": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "gpt-neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),
}
"""``tiny-random-<family>``: one small random model per supported family (tests)."""


TINY_FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": TINY_CONFIG,
    # sliding + global layers, softcapping off (Gemma 3), query-key norms, (1 + w) norms
    "gemma": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=2048, sliding_window=8,
                  layer_types=["sliding_attention", "sliding_attention", "sliding_attention",
                               "full_attention"], query_pre_attn_scalar=16),
    "gpt2": dict(n_embd=64, n_layer=4, n_head=4, n_positions=2048),
    "gpt-neox": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, max_position_embeddings=2048, rotary_pct=0.5),
}
