"""Which traces to generate: the problems, their prompt style and how sentences are
labelled (kept free of torch, so the CLI builds its options from it). How to sample is
:class:`mechreason.model.engine.SamplingConfig`."""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

from mechreason.errors import MechReasonError, unknown

Task = Literal["arithmetic", "gsm8k", "math"]
TASKS: tuple[str, ...] = typing.get_args(Task)
DIFFICULTIES = (1, 2, 3, 4, 5)
LABELLERS = ("rules", "llm-judge")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TracesConfig:
    """Which problems, in which prompt style, labelled how."""

    task: Task
    """Problem source: procedural arithmetic, GSM8K or MATH (these two from --data-file)."""
    n: int = 20
    """Number of problems (the run's seed picks them)."""
    difficulty: int | None = None
    """Arithmetic steps per problem, 1 to 5 (None: cycle 1..5)."""
    data_file: str | None = None
    """GSM8K/MATH JSONL (MATH: or a directory of JSON); None: the hub."""
    style: str = "cot"
    """Prompt style (mechreason.traces.prompts: cot, direct, or one registered)."""
    labeller: Literal["rules", "llm-judge"] = "rules"
    """Sentence labels: keyword rules, or the model itself as judge."""
    drop_tail: bool = False
    """Drop an unterminated last sentence (Thought Anchors' choice)."""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise unknown("task", self.task, TASKS)
        if self.n < 1:
            raise MechReasonError(f"n must be >= 1, got {self.n}")
        if self.difficulty is not None and self.difficulty not in DIFFICULTIES:
            raise MechReasonError(f"difficulty must be one of {DIFFICULTIES}, got "
                                  f"{self.difficulty}")
        if self.labeller not in LABELLERS:
            raise unknown("labeller", self.labeller, LABELLERS)
