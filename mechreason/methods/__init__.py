"""Seed methods that are neither a stage nor steering: CoT-decoding (Wang and Zhou
2024), ThinkEdit head ranking and editing (Sun et al. 2025), and the hybrid
base + thinking decoding loop (Venhoff et al. 2025b).

Exports load lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "cot_decode": "cot_decoding", "CotPath": "cot_decoding", "CotResult": "cot_decoding",
    "rank_heads": "head_edit", "edit_heads": "head_edit", "HeadEdit": "head_edit",
    "HeadScore": "head_edit",
    "hybrid_generate": "hybrid", "HybridConfig": "hybrid", "HybridResult": "hybrid",
    "cosine_selector": "hybrid",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
