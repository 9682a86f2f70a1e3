"""Tasks: problems with checkable answers (the first stage of the pipeline).

Three kinds, one record type (:class:`Problem`):

- ``arithmetic``: a seeded procedural generator of word problems with integer answers.
  A story starts with a quantity and applies 1 to 5 steps (the difficulty), each an
  add / subtract / multiply / divide drawn from several phrasings; every intermediate
  value is a non-negative integer. The expression is stored in ``meta["expression"]``
  so tests can evaluate it independently. The easy end (1 step) is within reach of
  SmolLM2-135M.
- ``gsm8k``: GSM8K-style JSONL (``question``, ``answer`` ending ``#### N``; Cobbe et al.
  2021) from a path, or through ``datasets`` when a hub is reachable. Difficulty is the
  number of ``<<...>>`` calculator steps in the reference solution (capped at 5).
- ``math``: MATH-style problems (Hendrycks et al. 2021) with the answer in
  ``\\boxed{}`` of ``solution``, from a JSONL file or a directory of JSON files;
  difficulty is ``level`` ("Level 3" -> 3).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from pathlib import Path
from typing import Any

from mechreason.errors import MechReasonError, unknown
from mechreason.traces.config import DIFFICULTIES, TASKS
from mechreason.traces.grading import boxed_contents, normalize

__all__ = ["DIFFICULTIES", "TASKS", "Problem", "make_problems", "load_gsm8k", "load_math"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Problem:
    """One problem with a checkable answer."""

    id: str
    """Stable id (resume and capture key on it)."""
    task: str
    """``arithmetic``, ``gsm8k`` or ``math``."""
    question: str
    """The problem text shown to the model."""
    gold: str
    """The reference answer, normalised (``grading.grade`` compares against it)."""
    difficulty: int | None = None
    """1..5 (steps, or MATH level), or None when unknown."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Task-specific extras (expression, source line, subject, reference solution)."""


def make_problems(task: str, n: int, *, seed: int, difficulty: int | None = None,
                  data_file: str | Path | None = None) -> list[Problem]:
    """``n`` problems of ``task``; the same arguments always give the same problems.

    Args:
        task: ``arithmetic``, ``gsm8k`` or ``math``.
        n: how many (for datasets: the first ``n`` of a seeded permutation, so a
            smaller ``n`` gives a subset of a larger one; all if fewer).
        seed: picks the problems (and, for arithmetic, writes them).
        difficulty: keep only this difficulty (1..5); for arithmetic None cycles 1..5.
        data_file: JSONL (or, for math, a directory of JSON files); None loads
            through ``datasets`` from the hub.
    """
    if task not in TASKS:
        raise unknown("task", task, TASKS)
    if n < 1:
        raise MechReasonError(f"n must be >= 1, got {n}")
    if difficulty is not None and difficulty not in DIFFICULTIES:
        raise MechReasonError(f"difficulty must be one of {DIFFICULTIES} or None, got {difficulty!r}")
    if task == "arithmetic":
        return arithmetic_problems(n, seed=seed, difficulty=difficulty)
    problems = load_gsm8k(data_file) if task == "gsm8k" else load_math(data_file)
    if difficulty is not None:
        problems = [p for p in problems if p.difficulty == difficulty]
    if not problems:
        raise MechReasonError(f"no {task} problems with difficulty {difficulty} in {data_file}")
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)  # a seeded permutation: n=40 is a subset of n=200
    picked = sorted(order[:n])
    return [problems[i] for i in picked]


# ---------------------------------------------------------------- arithmetic generator

_NAMES = ("Tom", "Mia", "Ravi", "Lena", "Omar", "Sara", "Ken", "Ana", "Ben", "Zoe")
_ITEMS = ("apples", "marbles", "stickers", "books", "coins", "pencils", "cards", "shells")
_START = ("{name} has {a} {item}.", "{name} starts with {a} {item}.",
          "There are {a} {item} in {name}'s box.")
_STEPS: dict[str, tuple[str, ...]] = {
    "+": ("{name} buys {k} more {item}.", "A friend gives {name} {k} {item}.",
          "{name} finds {k} more {item}."),
    "-": ("{name} gives away {k} {item}.", "{name} loses {k} {item}.",
          "{name} sells {k} of the {item}."),
    "*": ("Then the number of {item} becomes {k} times as large.",
          "{name} ends up with {k} times as many {item} as before.",
          "Each of the {item} is swapped for {k} new ones."),
    "/": ("{name} splits the {item} into {k} equal groups and keeps one group.",
          "{name} shares the {item} equally among {k} friends and keeps one share.",
          "Only one in every {k} {item} is kept; the rest are given away."),
}
_QUESTION = "How many {item} does {name} have now?"
_MAX_VALUE = 200


def arithmetic_problems(n: int, *, seed: int, difficulty: int | None = None) -> list[Problem]:
    """``n`` procedural word problems; difficulty None cycles 1..5."""
    rng = random.Random(f"mechreason-arithmetic-{seed}")
    out = []
    for i in range(n):
        d = difficulty if difficulty is not None else DIFFICULTIES[i % len(DIFFICULTIES)]
        q, expr, value, ops = _story(rng, d)
        out.append(Problem(id=f"arithmetic-s{seed}-d{d}-{i}", task="arithmetic", question=q,
                           gold=str(value), difficulty=d,
                           meta={"expression": expr, "ops": ops, "seed": seed}))
    return out


def _story(rng: random.Random, steps: int) -> tuple[str, str, int, list[str]]:
    name, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    value = rng.randint(2, 30)
    expr = str(value)
    parts = [rng.choice(_START).format(name=name, a=value, item=item)]
    ops = []
    for _ in range(steps):
        op, k = _pick_step(rng, value)
        parts.append(rng.choice(_STEPS[op]).format(name=name, k=k, item=item))
        value = {"+": value + k, "-": value - k, "*": value * k, "/": value // k}[op]
        expr = f"({expr} {op} {k})"
        ops.append(op)
    parts.append(_QUESTION.format(name=name, item=item))
    return " ".join(parts), expr, value, ops


def _pick_step(rng: random.Random, value: int) -> tuple[str, int]:
    """An operation and operand that keep the value a non-negative integer <= 200."""
    choices = ["+"]
    if value >= 3:
        choices.append("-")
    if value * 2 <= _MAX_VALUE:
        choices.append("*")
    if any(value % k == 0 for k in range(2, 6)) and value >= 4:
        choices.append("/")
    op = rng.choice(choices)
    if op == "+":
        return op, rng.randint(2, max(2, min(30, _MAX_VALUE - value)))
    if op == "-":
        return op, rng.randint(2, value - 1)
    if op == "*":
        return op, rng.choice([k for k in range(2, 6) if value * k <= _MAX_VALUE])
    return op, rng.choice([k for k in range(2, 6) if value % k == 0])


# ---------------------------------------------------------------- datasets

def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise MechReasonError(f"data file {str(path)!r} does not exist")
    from mechreason.artifacts import read_text

    rows = []
    for lineno, line in enumerate(read_text(path, "data file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise MechReasonError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(rows[-1], dict):
            raise MechReasonError(f"{path}:{lineno}: not a JSON object")
    if not rows:
        raise MechReasonError(f"data file {str(path)!r} holds no records")
    return rows


def _require(row: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    missing = [k for k in keys if k not in row]
    if missing:
        raise MechReasonError(f"{where}: record lacks {missing}; it has {sorted(row)}")


def _hub_rows(name: str, config: str | None, split: str) -> list[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise MechReasonError("no data file given and `datasets` is not installed; "
                              "pass --data-file PATH") from None
    try:
        return list(datasets.load_dataset(name, config, split=split))
    except Exception as e:  # datasets raises many types (network, auth, missing config)
        raise MechReasonError(f"could not load {name!r} from the hub ({type(e).__name__}: "
                              f"{e}); pass --data-file PATH to read a local JSONL") from e


def gsm8k_gold(answer: str) -> str:
    """The final answer after ``####`` in a GSM8K solution, normalised."""
    m = re.search(r"####\s*(.+?)\s*$", answer.strip())
    gold = normalize(m.group(1)) if m else None
    if gold is None:
        raise MechReasonError(f"GSM8K answer has no '#### N' line: {answer[-80:]!r}")
    return gold


def load_gsm8k(data_file: str | Path | None = None) -> list[Problem]:
    """All problems of a GSM8K-style JSONL (or the hub's ``openai/gsm8k`` train split)."""
    if data_file is None:
        rows, source = _hub_rows("openai/gsm8k", "main", "train"), "hub:openai/gsm8k"
    else:
        rows, source = _read_jsonl(Path(data_file)), Path(data_file).name
    out = []
    for i, row in enumerate(rows):
        _require(row, ("question", "answer"), f"{source} record {i}")
        steps = len(re.findall(r"<<", row["answer"]))
        out.append(Problem(id=f"gsm8k-{Path(source).stem}-{i}", task="gsm8k",
                           question=row["question"].strip(), gold=gsm8k_gold(row["answer"]),
                           difficulty=min(max(steps, 1), 5),
                           meta={"line": i, "source": source, "solution": row["answer"],
                                 "steps": steps}))
    return out


def math_gold(solution: str) -> str:
    """The last ``\\boxed{}`` content of a MATH solution, normalised."""
    boxes = boxed_contents(solution)
    gold = normalize(boxes[-1][1]) if boxes else None
    if gold is None:
        raise MechReasonError(f"MATH solution has no \\boxed{{}} answer: {solution[-80:]!r}")
    return gold


def load_math(data_file: str | Path | None = None) -> list[Problem]:
    """MATH-style problems (``problem``, ``solution`` with ``\\boxed{}``, optional
    ``level``, ``type``) from JSONL, a directory of JSON files, or the hub."""
    if data_file is None:
        rows, source = _hub_rows("HuggingFaceH4/MATH-500", None, "test"), "hub:MATH-500"
    elif Path(data_file).is_dir():
        files = sorted(Path(data_file).rglob("*.json"))
        if not files:
            raise MechReasonError(f"directory {str(data_file)!r} holds no .json files")
        from mechreason.artifacts import read_json

        rows = [read_json(f, "data file") for f in files]
        source = Path(data_file).name
    else:
        rows, source = _read_jsonl(Path(data_file)), Path(data_file).name
    out = []
    for i, row in enumerate(rows):
        _require(row, ("problem", "solution"), f"{source} record {i}")
        gold = normalize(str(row["answer"])) if row.get("answer") else math_gold(row["solution"])
        level = re.search(r"\d", str(row.get("level", "")))
        out.append(Problem(id=f"math-{Path(source).stem}-{i}", task="math",
                           question=row["problem"].strip(), gold=gold or "",
                           difficulty=int(level.group(0)) if level else None,
                           meta={"source": source, "subject": row.get("type") or
                                 row.get("subject"), "solution": row["solution"]}))
    return out
