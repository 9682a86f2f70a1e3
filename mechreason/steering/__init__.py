"""Steering: add directions, clamp or add SAE latents and project directions out at
chosen tokens during KV-cached batched generation, with one fused hook per touched
layer (DESIGN section 5); plus the evaluation that finds what to steer with.
CoT-decoding, head editing and the hybrid loop live in :mod:`mechreason.methods`.

Exports load lazily, so importing the package (or its config) does not import torch.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "Ablate": "interventions", "Add": "interventions", "AddLatent": "interventions",
    "Clamp": "interventions", "Intervention": "interventions",
    "latent_activation": "interventions",
    "Positions": "positions",
    "Steering": "engine", "steer": "engine",
    "SteerConfig": "experiment", "run_experiment": "experiment",
    "direction_vector": "mechreason.directions.io",
    "left_pad": "mechreason.model.engine",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
