"""How to train one SAE (kept free of torch, so the CLI builds its options from it)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from mechreason.errors import MechReasonError, unknown

TRAIN_ARCHS = ("topk", "relu")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train one SAE."""

    arch: Literal["topk", "relu"] = "topk"
    """``topk`` (with AuxK) or ``relu`` (with L1)."""
    expansion: int = 8
    """d_sae = expansion * d_in."""
    d_sae: int | None = None
    """Number of latents, overriding ``expansion`` (small SAEs for behaviour clustering)."""
    k: int = 32
    """Active latents per token (topk)."""
    l1_coeff: float = 5.0
    """L1 penalty on latent activations (relu); the MSE is in normalised units."""
    lr: float = 4e-4
    """Adam learning rate."""
    batch_size: int = 1024
    """Activation rows per step."""
    n_tokens: int | None = None
    """Training rows in all; None: ``epochs`` passes over the data."""
    epochs: int = 1
    """Passes over the data when ``n_tokens`` is None."""
    warmup_steps: int = 50
    """Linear learning-rate warm-up."""
    decay_frac: float = 0.2
    """Final fraction of steps over which the learning rate decays linearly to 0."""
    aux_coeff: float = 1 / 32
    """AuxK loss weight (Gao et al. use 1/32)."""
    k_aux: int | None = None
    """Dead latents used by AuxK; None: d_in // 2."""
    dead_tokens: int = 100_000
    """A latent not fired in this many training rows counts as dead."""
    grad_clip: float | None = 1.0
    """Gradient-norm clip (None: off)."""
    init_rows: int = 8192
    """Rows used to set the normalisation and the geometric-median b_dec."""
    seed: int = 0
    """Seeds the weights and the data order."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""
    keep_state: bool = False
    """Keep ``train_state.pt`` after finishing (to extend the run later)."""

    def __post_init__(self) -> None:
        if self.arch not in TRAIN_ARCHS:
            raise unknown("trainable SAE architecture", self.arch, TRAIN_ARCHS)
        for name in ("expansion", "k", "batch_size", "epochs", "checkpoint_every", "init_rows"):
            if getattr(self, name) < 1:
                raise MechReasonError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.decay_frac <= 1:
            raise MechReasonError(f"need lr > 0 and 0 <= decay_frac <= 1, got {self.lr}, "
                                  f"{self.decay_frac}")
