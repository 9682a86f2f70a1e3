"""The model layer: loading (bundled GGUF packages, hub ids, local directories, tiny
random models), TransformerLens hook names on the unmodified HF modules, and the one
decode engine (KV-cached batched generation that every stage decodes through).

Exports load lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "Model": "loading", "load_model": "loading", "list_models": "loading",
    "hook_name": "loading", "parse_layers": "loading", "BACKENDS": "loading",
    "DEFAULT_MODEL": "weights", "TINY_RANDOM": "weights", "cache_root": "weights",
    "parse_dtype": "weights",
    "HookPoint": "hookpoints", "family_of": "hookpoints",
    "hooks_context": "hooks", "run_forward": "hooks", "StopForward": "hooks",
    "SamplingConfig": "engine", "left_pad": "engine", "prefill": "engine",
    "decode_loop": "engine",
    "Generation": "generation", "generate": "generation", "iter_generate": "generation",
    "decode": "generation",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
