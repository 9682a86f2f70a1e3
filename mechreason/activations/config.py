"""What a capture records: hook names, positions, aggregation and storage dtype."""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from mechreason.errors import MechReasonError, unknown

POSITION_MODES = ("all", "last", "prompt", "generated", "first-generated")
AGGREGATES = ("token", "mean")
DTYPES = ("float16", "bfloat16", "float32")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """What to capture and how to store it."""

    hooks: tuple[str, ...] = ("blocks.*.hook_resid_post",)
    """TransformerLens hook names; ``blocks.*.`` expands to every layer."""
    positions: str | tuple[int, ...] = "all"
    """``all``, ``last``, ``prompt``, ``generated``, ``first-generated`` (the last three
    need trace records), or explicit token indices (negative counts from the end)."""
    aggregate: Literal["token", "mean"] = "token"
    """``token``: one row per position; ``mean``: one row per sentence for traces (per
    item otherwise), the mean over the selected positions."""
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    """Storage dtype: float16, bfloat16 or float32."""
    batch_size: int = 8
    """Items per forward pass."""
    shard_rows: int = 4096
    """A shard is closed (at a batch boundary) once it holds at least this many rows."""
    max_length: int | None = None
    """Truncate items to this many tokens (recorded in the store's config; None: an item
    longer than the model's context is refused)."""

    def __post_init__(self) -> None:
        if not self.hooks:
            raise MechReasonError("capture needs at least one hook name")
        if isinstance(self.positions, str) and self.positions not in POSITION_MODES:
            raise unknown("positions mode", self.positions, POSITION_MODES)
        if self.aggregate not in AGGREGATES:
            raise unknown("aggregate", self.aggregate, AGGREGATES)
        if self.dtype not in DTYPES:
            raise unknown("dtype", self.dtype, DTYPES)
        if self.batch_size < 1 or self.shard_rows < 1:
            raise MechReasonError(
                f"batch_size and shard_rows must be >= 1, got {self.batch_size}, {self.shard_rows}")


def parse_positions(spec: str) -> str | tuple[int, ...]:
    """CLI form: a mode name, or comma-separated token indices (``0,5,-1``)."""
    if spec in POSITION_MODES:
        return spec
    if re.fullmatch(r"-?\d+(,-?\d+)*", spec):
        return tuple(int(x) for x in spec.split(","))
    raise unknown("positions", spec, [*POSITION_MODES, "<comma-separated indices>"])
