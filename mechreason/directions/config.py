"""What the directions stage computes (kept free of torch, so the CLI builds its options
from it without loading the model stack)."""

from __future__ import annotations

import dataclasses

from mechreason.errors import MechReasonError, unknown


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirectionsConfig:
    """What direction to compute from which activations."""

    acts: tuple[str, ...]
    """Capture directories (``mechreason capture``); several are read as one pool."""
    contrast: str
    """``key=A:B`` or ``key=A`` (A vs the rest), e.g. ``style=cot:direct``."""
    aggregate: str = "first-generated"
    """How tokens become vectors: sentence-start, sentence-mean, reasoning-mean,
    last-prompt or first-generated (:data:`~mechreason.directions.contrast.AGGREGATIONS`)."""
    method: str = "mean-diff"
    """mean-diff, unit-mean-diff, label-vs-all, pca or logistic
    (:data:`~mechreason.directions.methods.METHODS`)."""
    hooks: tuple[str, ...] = ()
    """Hooks to sweep (empty: every hook the stores share)."""
    test_frac: float = 0.3
    """Fraction of problems held out for the sweep's metrics."""
    seed: int = 0
    """Seed of the problem split and of the random control directions."""
    split_key: str = "auto"
    """Item field naming the problem (auto: problem_id, else question, else item id)."""
    min_problems: int = 10
    """Groups with fewer problems than this are flagged as too small to trust."""

    def __post_init__(self) -> None:
        from mechreason.directions.contrast import AGGREGATIONS, ContrastSpec
        from mechreason.directions.methods import METHODS

        if not self.acts:
            raise MechReasonError("directions need at least one --acts directory")
        ContrastSpec.parse(self.contrast)
        if self.aggregate not in AGGREGATIONS:
            raise unknown("aggregation", self.aggregate, AGGREGATIONS)
        if self.method not in METHODS:
            raise unknown("direction method", self.method, METHODS)
        if not 0 < self.test_frac < 1:
            raise MechReasonError(f"test_frac must be in (0, 1), got {self.test_frac!r}")
