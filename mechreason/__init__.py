"""mechreason: mechanistic interpretability of reasoning in language models.

The public API is re-exported here lazily, so ``import mechreason`` stays cheap (torch
and transformers load on first use).
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

__version__ = "0.1.0"

_EXPORTS = {
    "MechReasonError": "mechreason.errors",
    "load_model": "mechreason.model.loading",
    "list_models": "mechreason.model.loading",
    "Model": "mechreason.model.loading",
    "hook_name": "mechreason.model.loading",
    "capture": "mechreason.activations",
    "CaptureConfig": "mechreason.activations",
    "ActivationStore": "mechreason.activations",
    "hooks_context": "mechreason.model.hooks",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__ = lazy_getattr(__name__, _EXPORTS)
