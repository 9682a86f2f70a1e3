"""Artifacts: every stage writes a self-describing directory.

One module holds the file names, the one function that computes a path for both save
and load (:func:`artifact_path`), atomic writers (temp file, then rename, so a crash
never leaves a half-written file), and the provenance record ``meta.json`` written
beside every artifact (mechreason version, model id and weights hash, hooks, seed,
dtype, library versions, git commit).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mechreason.errors import MechReasonError
from mechreason.outputs import disk_errors

# File names, one place for all stages.
CFG_JSON = "cfg.json"
META_JSON = "meta.json"
INDEX_JSONL = "index.jsonl"
SHARD_PATTERN = "shard-{:05d}.safetensors"
TRACES_JSONL = "traces.jsonl"
DIRECTION_FILE = "direction.safetensors"
DIRECTION_JSON = "direction.json"
SAE_WEIGHTS = "sae_weights.safetensors"  # SAELens folder format
SUMMARY_JSON = "summary.json"
FEATURE_SCORES = "scores.safetensors"  # mechreason features
RANKING_JSON = "ranking.json"
FEATURES_JSON = "features.json"  # the demo's feature stage
CLUSTERS_JSON = "clusters.json"  # mechreason behaviours
ASSIGNMENTS_JSON = "assignments.json"
BEHAVIOUR_DIRECTIONS = "directions.safetensors"
SAE_EVAL_JSON = "eval.json"  # mechreason sae eval
SAE_TRAINING_JSON = "training.json"  # the training summary
SAE_STATE = "train_state.pt"  # a training run's last checkpoint (resume)
SWEEPS_JSON = "sweeps.json"  # the demo's layer sweeps
ROLLOUTS_JSONL = "rollouts.jsonl"  # mechreason anchors: every rollout, appended
RESAMPLING_JSON = "resampling.json"  # resampling importances
RESAMPLE_CFG_JSON = "resample_cfg.json"  # the settings the rollouts were made with
ANCHORS_TABLE_JSON = "table.json"  # one row per sentence, every method's importance
RECEIVERS_JSON = "receivers.json"
SUPPRESSION_FILE = "suppression.safetensors"
CHUNKS_JSON = "chunks_labeled.json"  # thought-anchors.com viewer format
STEPS_JSON = "step_importance.json"
VIEW_HTML = "view.html"  # the anchors viewer page
REPORT_HTML = "report.html"  # mechreason report

KINDS = {
    "cfg": CFG_JSON,
    "meta": META_JSON,
    "index": INDEX_JSONL,
    "traces": TRACES_JSONL,
    "direction": DIRECTION_FILE,
    "direction_json": DIRECTION_JSON,
    "sae_weights": SAE_WEIGHTS,
    "summary": SUMMARY_JSON,
    "feature_scores": FEATURE_SCORES,
    "ranking": RANKING_JSON,
    "features": FEATURES_JSON,
    "clusters": CLUSTERS_JSON,
    "assignments": ASSIGNMENTS_JSON,
    "behaviour_directions": BEHAVIOUR_DIRECTIONS,
    "sae_eval": SAE_EVAL_JSON,
    "sae_training": SAE_TRAINING_JSON,
    "sae_state": SAE_STATE,
    "sweeps": SWEEPS_JSON,
    "rollouts": ROLLOUTS_JSONL,
    "resampling": RESAMPLING_JSON,
    "resample_cfg": RESAMPLE_CFG_JSON,
    "anchors_table": ANCHORS_TABLE_JSON,
    "receivers": RECEIVERS_JSON,
    "suppression": SUPPRESSION_FILE,
    "chunks": CHUNKS_JSON,
    "steps": STEPS_JSON,
    "view": VIEW_HTML,
    "report": REPORT_HTML,
}


def _umask() -> int:
    """The process umask, read without changing it (Linux: /proc; elsewhere the only
    portable way is to set and restore it, done here at write time, never at import)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def artifact_path(root: str | os.PathLike[str], kind: str, shard: int | None = None) -> Path:
    """The path of one file of an artifact directory, for save and load alike."""
    root = Path(root)
    if kind == "shard":
        if shard is None or shard < 0:
            raise MechReasonError(f"a shard path needs a shard number >= 0, got {shard!r}")
        return root / SHARD_PATTERN.format(shard)
    if kind not in KINDS:
        from mechreason.errors import unknown

        raise unknown("artifact kind", kind, [*KINDS, "shard"])
    return root / KINDS[kind]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it becomes ``target``
    in one rename, unless another process made ``target`` meanwhile (theirs is kept:
    both wrote the same content). On failure nothing is left behind."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(target):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            yield tmp
            if target.exists():
                shutil.rmtree(tmp)
            else:
                os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def read_text(path: str | os.PathLike[str], what: str = "file") -> str:
    """A UTF-8 text file's content; a missing, unreadable or non-UTF-8 file raises one
    clear error naming it."""
    path = Path(path)
    if not path.is_file():
        raise MechReasonError(f"{what} {str(path)!r} does not exist (or is not a file)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MechReasonError(f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}: "
                              f"{e.object[e.start:e.start + 1]!r}); is it a binary file?") from None
    except OSError as e:
        raise MechReasonError(f"cannot read {what} {str(path)!r}: {e.strerror}") from None


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    path = Path(path)
    if not path.is_file():
        raise MechReasonError(f"no such file: {str(path)!r}")
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as e:
        raise MechReasonError(f"{str(path)!r} is not valid JSON ({e.msg} at line {e.lineno}); "
                              "is the file truncated or corrupted?") from None


def load_tensors(path: str | os.PathLike[str], what: str = "tensor file") -> dict[str, Any]:
    """Every tensor of a safetensors file; a missing, truncated or corrupted file raises
    one clear error naming it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MechReasonError(f"{what} {str(path)!r} does not exist")
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, or OSError for unreadable bytes
        raise corrupt_error(path, what, e) from None


def corrupt_error(path: str | os.PathLike[str], what: str, e: BaseException) -> MechReasonError:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return MechReasonError(f"{what} {str(path)!r} is truncated or corrupted ({reason}); "
                           "re-create it from its inputs")


def torch_load(path: str | os.PathLike[str], what: str = "checkpoint") -> Any:
    """``torch.load(weights_only=True)`` with a clear error for a corrupted file."""
    import torch

    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        raise MechReasonError(f"{what} {str(path)!r} is truncated or corrupted "
                              f"({type(e).__name__}); delete it to start that part again") from None


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, Any],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and numpy/torch scalars made JSON-friendly."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return obj


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("mechreason", "torch", "transformers", "transformer-lens", "sae-lens", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def provenance(model: Any = None, **extra: Any) -> dict[str, Any]:
    """The ``meta.json`` record: versions, git commit, model identity, and ``extra``."""
    from mechreason import __version__

    meta: dict[str, Any] = {
        "mechreason_version": __version__,
        "created_unix": time.time(),
        "git_commit": _git_commit(),
        "libraries": library_versions(),
    }
    if model is not None:
        meta["model"] = {"name": model.name, "weights_sha256": model.weights_hash,
                         "dtype": str(model.dtype).removeprefix("torch."),
                         "n_layers": model.n_layers, "d_model": model.d_model,
                         # HF's architecture family ("llama"): what repeng and llama.cpp
                         # write as a control vector's model hint
                         "model_type": getattr(getattr(getattr(model, "hf", None), "config",
                                                       None), "model_type", None)}
    meta.update(extra)
    return meta


def write_meta(root: str | os.PathLike[str], model: Any = None, **extra: Any) -> None:
    write_json(artifact_path(root, "meta"), provenance(model, **extra))
