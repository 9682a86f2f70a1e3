"""Report stage readers: one function per pipeline stage turns that stage's artifact
directory inside a run directory into a :class:`Section` (numbers with confidence
intervals, figures, links to the raw files).

The files each reader needs are named in one place, :data:`STAGES` (documented in
docs/report.md), and match what the stage modules write: traces (``mechreason
traces``), the capture store, the direction directory (Venhoff et al. 2025a layer
sweep), SAE features (He et al. 2026; ReasonScore), first-token steering
(He et al. 2026) and thought anchors (Bogdan et al. 2025).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from mechreason import artifacts as A
from mechreason.errors import MechReasonError


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageFiles:
    """Where one stage's artifacts live inside a run directory."""

    title: str
    """Section heading."""
    dirs: tuple[str, ...]
    """Sub-directory names tried in order (the first that exists is used)."""
    required: tuple[str, ...]
    """Files (relative to the stage dir) without which the stage counts as missing;
    ``"a|b"`` accepts either file."""
    optional: tuple[str, ...] = ()
    """Files drawn when present."""


# One place for every file the report reads (docs/report.md documents their schemas).
STAGES: dict[str, StageFiles] = {
    "traces": StageFiles(title="Traces: cot vs direct", dirs=("traces",),
                         required=(A.TRACES_JSONL,)),
    "acts": StageFiles(title="Captured activations", dirs=("acts",), required=(A.CFG_JSON,)),
    "directions": StageFiles(title="Direction and layer sweep", dirs=("directions",),
                             required=(f"{A.DIRECTION_JSON}|cot_vs_direct/{A.DIRECTION_JSON}",),
                             optional=(A.META_JSON, A.SWEEPS_JSON)),
    "sae": StageFiles(title="SAE reasoning features", dirs=("sae", "features"),
                      required=(f"{A.FEATURES_JSON}|{A.RANKING_JSON}",),
                      optional=(A.SAE_TRAINING_JSON,)),
    "steering": StageFiles(title="First-token steering", dirs=("steering",),
                           required=(A.SUMMARY_JSON,)),
    "anchors": StageFiles(title="Thought anchors", dirs=("anchors",),
                          required=(A.ANCHORS_TABLE_JSON,),
                          optional=(A.VIEW_HTML, A.RECEIVERS_JSON, A.SUPPRESSION_FILE)),
}
RUN_SUMMARY = A.SUMMARY_JSON
"""Run-level file (written by ``mechreason demo``): model, per-stage status, key figures."""
IMPORTANCE_COLUMNS = ("counterfactual_kl_laplace", "counterfactual_kl", "resampling_kl",
                      "forced_importance_kl", "suppression_out", "receiver_score")
"""Anchors' per-sentence columns, in the order the report prefers for the importance plot."""


@dataclasses.dataclass(kw_only=True)
class Number:
    """One key number, with an optional 95% interval."""

    name: str
    value: float | int | str | None
    lo: float | None = None
    hi: float | None = None
    note: str = ""


@dataclasses.dataclass(kw_only=True)
class Section:
    """What the report shows for one stage."""

    key: str
    title: str
    status: str = "ok"
    """ok | missing | not available | failed | error."""
    reason: str = ""
    root: Path | None = None
    numbers: list[Number] = dataclasses.field(default_factory=list)
    figures: list[Any] = dataclasses.field(default_factory=list)
    """plotly Figures."""
    snippets: list[str] = dataclasses.field(default_factory=list)
    """Trusted HTML snippets (built by mechreason.report.plots, escaped there)."""
    links: list[Path] = dataclasses.field(default_factory=list)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MechReasonError(f"cannot read {str(path)!r}: {e}") from e


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL file; a torn last line (interrupted write) is skipped."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise MechReasonError(f"{str(path)!r} is not UTF-8 text: {e.reason}") from e
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                continue
            raise MechReasonError(f"{str(path)!r} line {i + 1} is not JSON: {e}") from e
    return out


def _links(root: Path, names: tuple[str, ...]) -> list[Path]:
    return [root / n for n in dict.fromkeys(names) if (root / n).exists()]


# --- readers ---------------------------------------------------------------------


def read_stage(run_dir: Path, key: str, run_summary: dict[str, Any]) -> Section:
    """The section of stage ``key``: its numbers and figures, or why it is missing."""
    spec = STAGES[key]
    sec = Section(key=key, title=spec.title)
    root = next((run_dir / d for d in spec.dirs if (run_dir / d).is_dir()), run_dir / spec.dirs[0])
    sec.root = root
    stage = (run_summary.get("stages") or {}).get(key) or {}
    absent = [f"{root.name}/{f.replace('|', ' or ')}" for f in spec.required
              if not any((root / alt).exists() for alt in f.split("|"))]
    if absent:
        status = stage.get("status")
        sec.status = status if status in ("not available", "failed", "skipped") else "missing"
        sec.reason = stage.get("reason") or f"missing: {', '.join(absent)}"
        if sec.status != "missing":
            sec.reason += f" (missing: {', '.join(absent)})"
        return sec
    try:
        from mechreason.report.readers import READERS

        READERS[key](sec, root)
    except (MechReasonError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        sec.status, sec.reason = "error", f"could not read the {key} artifacts: {type(e).__name__}: {e}"
    if stage.get("note"):
        sec.reason = str(stage["note"])
    names = [alt for f in spec.required for alt in f.split("|")]
    sec.links = _links(root, (*names, *spec.optional, A.CFG_JSON, A.META_JSON))
    return sec
