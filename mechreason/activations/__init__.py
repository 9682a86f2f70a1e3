"""Activation capture (stage 2): hooked forward passes written to disk as sharded
safetensors, keyed by trace, sentence and phase; :class:`ActivationStore` reads them.

``capture`` is a function here and at the package root (``from mechreason import
capture``); no submodule shares its name, so importing one never rebinds it.
"""

from mechreason.activations.config import (
    AGGREGATES,
    DTYPES,
    POSITION_MODES,
    CaptureConfig,
    parse_positions,
)
from mechreason.activations.items import expand_hooks, load_items
from mechreason.activations.run import capture
from mechreason.activations.store import ActivationStore

__all__ = ["AGGREGATES", "DTYPES", "POSITION_MODES", "ActivationStore", "CaptureConfig",
           "capture", "expand_hooks", "load_items", "parse_positions"]
