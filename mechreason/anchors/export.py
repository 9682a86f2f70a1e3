"""Thought anchors, stage 5: export to the thought-anchors.com viewer (Bogdan, Macar,
Nanda, Conmy 2025; the viewer reads one directory per problem).

- ``chunks_labeled.json``: a list, one object per chunk, with ``chunk``, ``chunk_idx``,
  ``function_tags``, ``depends_on`` (earlier chunk indices, as strings),
  ``importance`` and ``accuracy``, plus the named metrics we have
  (``resampling_importance_accuracy``, ``counterfactual_importance_kl``, ...);
- ``step_importance.json``: a list, one object per source chunk, with
  ``source_chunk_idx``, ``source_chunk_text`` and ``target_impacts`` (objects with
  ``target_chunk_idx`` and ``importance_score``) for every later chunk.

``importance`` is counterfactual importance (KL) when resampling ran, else the
suppression effect; the step matrix is resampling's sentence-to-sentence matrix, else
the suppression log-KL matrix. :func:`validate` is the schema check; :func:`read_viewer`
reads and validates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechreason.artifacts import CHUNKS_JSON, STEPS_JSON, read_json, write_json
from mechreason.errors import MechReasonError

_CHUNK_FIELDS: dict[str, type | tuple[type, ...]] = {
    "chunk": str, "chunk_idx": int, "function_tags": list, "depends_on": list,
    "importance": (int, float), "accuracy": (int, float, type(None))}
_METRIC_NAMES = {  # our column -> the viewer's field name
    "resampling_accuracy": "resampling_importance_accuracy",
    "resampling_kl": "resampling_importance_kl",
    "counterfactual_accuracy": "counterfactual_importance_accuracy",
    "counterfactual_kl": "counterfactual_importance_kl",
    "forced_importance_accuracy": "forced_importance_accuracy",
    "forced_importance_kl": "forced_importance_kl",
    "different_trajectories": "different_trajectories_fraction",
    "overdeterminedness": "overdeterminedness",
    "receiver_score": "receiver_score",
    "suppression_out": "suppression_importance",
}


def _num(v: Any) -> float:
    return 0.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def viewer_json(rows: Sequence[dict[str, Any]], step_matrix: Sequence[Sequence[float]] | None,
                *, depends_threshold: float = 0.1, depends_top: int = 3) -> tuple[list, list]:
    """Build both files' contents from a :func:`~mechreason.anchors.join.sentence_table`.

    ``depends_on`` of chunk j: up to ``depends_top`` earlier chunks whose step score
    toward j is at least ``depends_threshold``, strongest first.
    """
    n = len(rows)
    key = "counterfactual_kl" if rows and "counterfactual_kl" in rows[0] else "suppression_out"
    steps = [[_num(step_matrix[i][j]) if step_matrix is not None and j > i else 0.0
              for j in range(n)] for i in range(n)]
    chunks = []
    for j, row in enumerate(rows):
        deps = sorted((i for i in range(j) if steps[i][j] >= depends_threshold),
                      key=lambda i: -steps[i][j])[:depends_top]
        c = {"chunk": row["text"], "chunk_idx": j, "function_tags": list(row.get("labels", [])),
             "depends_on": [str(i) for i in deps], "importance": _num(row.get(key)),
             "accuracy": row.get("accuracy")}
        c |= {name: _num(row[col]) for col, name in _METRIC_NAMES.items() if col in row}
        chunks.append(c)
    step_json = [{"source_chunk_idx": i, "source_chunk_text": rows[i]["text"],
                  "target_impacts": [{"target_chunk_idx": j, "importance_score": steps[i][j]}
                                     for j in range(i + 1, n)]} for i in range(n)]
    return chunks, step_json


def validate(chunks: Any, steps: Any) -> None:
    """Raise :class:`MechReasonError` naming the first field that breaks the schema."""
    if not isinstance(chunks, list) or not isinstance(steps, list):
        raise MechReasonError("viewer JSON: both files must hold a list")
    for k, c in enumerate(chunks):
        for name, typ in _CHUNK_FIELDS.items():
            if name not in c:
                raise MechReasonError(f"{CHUNKS_JSON}[{k}] lacks {name!r}")
            if not isinstance(c[name], typ) or isinstance(c[name], bool):
                raise MechReasonError(f"{CHUNKS_JSON}[{k}].{name} has type "
                                      f"{type(c[name]).__name__}")
        if c["chunk_idx"] != k:
            raise MechReasonError(f"{CHUNKS_JSON}[{k}].chunk_idx is {c['chunk_idx']}, not {k}")
        if any(not isinstance(t, str) for t in c["function_tags"] + c["depends_on"]):
            raise MechReasonError(f"{CHUNKS_JSON}[{k}]: tags and depends_on must be strings")
        if any(int(d) >= k for d in c["depends_on"]):
            raise MechReasonError(f"{CHUNKS_JSON}[{k}].depends_on names a later chunk")
    n = len(chunks)
    for k, s in enumerate(steps):
        if set(s) != {"source_chunk_idx", "source_chunk_text", "target_impacts"}:
            raise MechReasonError(f"{STEPS_JSON}[{k}] has fields {sorted(s)}")
        if not 0 <= s["source_chunk_idx"] < n:
            raise MechReasonError(f"{STEPS_JSON}[{k}].source_chunk_idx out of range 0..{n - 1}")
        for t in s["target_impacts"]:
            if set(t) != {"target_chunk_idx", "importance_score"} or not isinstance(
                    t["importance_score"], (int, float)):
                raise MechReasonError(f"{STEPS_JSON}[{k}].target_impacts has a bad entry {t}")
            if not s["source_chunk_idx"] < t["target_chunk_idx"] < n:
                raise MechReasonError(f"{STEPS_JSON}[{k}] targets chunk {t['target_chunk_idx']}")


def write_viewer(out_dir: str | os.PathLike[str], chunks: list, steps: list) -> Path:
    """Validate, then write both files atomically into ``out_dir``."""
    validate(chunks, steps)
    out = Path(out_dir)
    write_json(out / CHUNKS_JSON, chunks)
    write_json(out / STEPS_JSON, steps)
    return out


def read_viewer(out_dir: str | os.PathLike[str]) -> tuple[list, list]:
    """Read and validate a viewer directory."""
    chunks, steps = read_json(Path(out_dir) / CHUNKS_JSON), read_json(Path(out_dir) / STEPS_JSON)
    validate(chunks, steps)
    return chunks, steps
