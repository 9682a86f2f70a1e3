"""The SAE stage's settings: training, evaluation, feature ranking and behaviour
clustering (kept free of torch, so the CLI builds its options from them)."""

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


BEHAVIOUR_METHODS = ("sae", "kmeans")


@dataclasses.dataclass(frozen=True, kw_only=True)
class BehaviourConfig:
    """How to cluster sentences into behaviours."""

    n_clusters: int = 10
    """Clusters (SAE latents or k-means centres); Venhoff et al. use 5 to 50."""
    method: Literal["sae", "kmeans"] = "sae"
    """``sae``: a small top-k SAE; ``kmeans``: spherical k-means."""
    k: int = 3
    """Active latents per sentence for the SAE method."""
    phase: str | None = "reasoning"
    """Only sentences of this phase (None, on the command line ``all``: every sentence)."""
    epochs: int = 30
    """SAE training passes over the sentences."""
    seed: int = 0
    """Seeds the SAE or the k-means initialisation."""
    n_examples: int = 5
    """Example sentences reported per cluster."""

    def __post_init__(self) -> None:
        if self.method not in BEHAVIOUR_METHODS:
            raise unknown("clustering method", self.method, BEHAVIOUR_METHODS)
        if self.n_clusters < 2 or not 1 <= self.k <= self.n_clusters:
            raise MechReasonError(f"need n_clusters >= 2 and 1 <= k <= n_clusters, got "
                                  f"{self.n_clusters}, {self.k}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """How to evaluate an SAE on a capture store."""

    all_rows: bool = False
    """Use every row of the store, not only the items held out from training (when the
    SAE was trained on this store)."""
    max_items: int = 64
    """Items (at most) for loss recovered."""
    max_length: int = 256
    """Tokens per item for loss recovered."""

    def __post_init__(self) -> None:
        for name in ("max_items", "max_length"):
            if getattr(self, name) < 1:
                raise MechReasonError(f"{name} must be >= 1, got {getattr(self, name)}")


FEATURE_SCORES = ("contrast", "reason")
FEATURE_SPANS = ("first-generated", "generated")


@dataclasses.dataclass(frozen=True, kw_only=True)
class FeaturesConfig:
    """How to rank an SAE's latents as reasoning features."""

    score: Literal["contrast", "reason"]
    """``contrast``: cot minus direct, with a held-out half (He et al. 2026); ``reason``:
    ReasonScore on reasoning words (Galichin et al. 2025)."""
    span: Literal["first-generated", "generated"] = "first-generated"
    """Contrast positions: the first generated token or the whole generated span."""
    top: int = 20
    """Latents reported, each with its top activations and logit lens."""

    def __post_init__(self) -> None:
        if self.score not in FEATURE_SCORES:
            raise unknown("feature score", self.score, FEATURE_SCORES)
        if self.span not in FEATURE_SPANS:
            raise unknown("contrast span", self.span, FEATURE_SPANS)
        if self.top < 1:
            raise MechReasonError(f"top must be >= 1, got {self.top}")
