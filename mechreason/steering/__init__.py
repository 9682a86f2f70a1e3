"""Steering: add directions, clamp or add SAE latents and project directions out at
chosen tokens during KV-cached batched generation, with one fused hook per touched
layer (DESIGN section 5); plus the evaluation that finds what to steer with.
CoT-decoding, head editing and the hybrid loop live in :mod:`mechreason.methods`.
"""

from mechreason.directions.io import direction_vector
from mechreason.model.engine import left_pad
from mechreason.steering.engine import Steering, steer
from mechreason.steering.interventions import (
    Ablate,
    Add,
    AddLatent,
    Clamp,
    Intervention,
    latent_activation,
)
from mechreason.steering.positions import Positions

__all__ = [
    "Ablate",
    "Add",
    "AddLatent",
    "Clamp",
    "Intervention",
    "Positions",
    "Steering",
    "latent_activation",
    "left_pad",
    "direction_vector",
    "steer",
]
