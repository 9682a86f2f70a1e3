"""What one demo run does: its stages, their order and dependencies, the data sizes (full and quick) and the run's config (kept light: the CLI builds its options from it)."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Literal

from mechreason.errors import MechReasonError, unknown
from mechreason.model.weights import DEFAULT_MODEL

STAGE_ORDER = ("traces", "acts", "directions", "sae", "steering", "anchors", "report")


NEEDS = {"traces": (), "acts": ("traces",), "directions": ("acts",), "sae": ("acts",),
         "steering": ("directions", "traces"), "anchors": ("traces",), "report": ()}


MODULES = {"traces": "mechreason.traces.run", "acts": "mechreason.activations",
           "directions": "mechreason.directions.pipeline", "sae": "mechreason.sae.io",
           "steering": "mechreason.steering", "anchors": "mechreason.anchors.analysis",
           "report": "mechreason.report.html"}


DTYPES = ("float32", "float16", "bfloat16")


SHIPPED_SAES = Path(__file__).resolve().parents[2] / "sae_checkpoints"


COT_VS_DIRECT = "cot_vs_direct"
"""Sub-directory of ``directions/`` holding the cot-vs-direct sweep (the steering vector)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sizes:
    """How much data each stage uses."""

    n_problems: int
    cot_tokens: int
    direct_tokens: int
    steer_prompts: int
    steer_tokens: int
    coefs: tuple[float, ...]
    rollouts: int
    rollout_tokens: int
    receiver_traces: int


# Coefficients 2 and 8 at the middle layer: where first-token steering with the
# cot-minus-direct direction switches SmolLM2-135M-Instruct into step-by-step answers
# (docs/steering.md, He et al. arm).
FULL = Sizes(n_problems=16, cot_tokens=128, direct_tokens=24, steer_prompts=12, steer_tokens=64,
             coefs=(0.0, 2.0, 8.0), rollouts=4, rollout_tokens=64, receiver_traces=8)


QUICK = Sizes(n_problems=6, cot_tokens=48, direct_tokens=12, steer_prompts=6, steer_tokens=48,
              coefs=(0.0, 8.0), rollouts=2, rollout_tokens=24, receiver_traces=4)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """One demo run."""

    out: Path
    """Run directory (stage sub-directories, summary.json, report.html); resumed if it exists."""
    model: str = DEFAULT_MODEL
    """Bundled short name, hub id or local directory."""
    quick: bool = False
    """Less data everywhere (the QUICK sizes), for a first look in a few minutes."""
    seed: int = 0
    """Seed of the problems, the problem split, the random control and the rollouts."""
    sae: str | None = None
    """An SAE folder (SAELens format), or a SAELens release name with ``sae_id``, to rank
    features with (None: a shipped SAE of the model from sae_checkpoints/)."""
    sae_id: str | None = None
    """The SAE's id within the SAELens release ``sae`` (needs a reachable hub)."""
    device: str | None = None
    """cpu, cuda, ... (None: cuda if available)."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Model weights' dtype: float32, float16 or bfloat16 (bfloat16 for large models on a GPU)."""
    progress: bool = True
    """Show a progress bar per stage."""
    only: tuple[str, ...] = ()
    """Run only these stages (empty: all); the others are recorded as not requested."""
    custom_sizes: Sizes | None = None
    """Override the FULL / QUICK sizes (analyses use this for larger runs)."""

    def __post_init__(self) -> None:
        if self.sae_id is not None and self.sae is None:
            raise MechReasonError("--sae-id needs --sae RELEASE (a SAELens release name)")
        if self.sae is not None and self.sae_id is None and not Path(self.sae).is_dir():
            raise MechReasonError(f"--sae {str(self.sae)!r} is not an SAE folder (cfg.json + sae_weights.safetensors)")
        bad = [st for st in self.only if st not in STAGE_ORDER]
        if bad:
            raise unknown("demo stage", bad[0], STAGE_ORDER)
        if self.dtype not in DTYPES:
            raise MechReasonError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @property
    def sizes(self) -> Sizes:
        if self.custom_sizes is not None:
            return self.custom_sizes
        return QUICK if self.quick else FULL


def available(stage: str) -> bool:
    """Whether the stage's module is part of this build."""
    try:
        return importlib.util.find_spec(MODULES[stage]) is not None
    except ModuleNotFoundError:
        return False
