"""Checks of what a user typed, run before any model load or generation (DESIGN section 7).

Small functions the CLI and the stage entry points call first: a device string, a
model name (without loading it), token ids against the vocabulary, lengths against the
model's context, and numbers that must be finite and in range. Each raises
:class:`MechReasonError` with the bad value and the valid choices.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mechreason.errors import MechReasonError, unknown

DEVICE_FORMS = ("cpu", "cuda", "cuda:N", "mps")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def check_device(device: str | None) -> str | None:
    """``device`` if torch can use it here; None stays None (the loader's default)."""
    if device is None:
        return None
    import torch

    m = re.fullmatch(r"(cpu|cuda|mps)(?::(\d+))?", device)
    if not m:
        raise MechReasonError(f"unknown device {device!r}; valid: {', '.join(map(repr, DEVICE_FORMS))}")
    kind, index = m.group(1), m.group(2)
    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise MechReasonError(f"device {device!r}: no CUDA GPU is available here (torch "
                                  f"{torch.__version__}); valid here: 'cpu'")
        if index is not None and int(index) >= n:
            raise MechReasonError(f"device {device!r}: this machine has {n} CUDA GPU(s), "
                                  f"valid: {', '.join(f'cuda:{i}' for i in range(n))}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise MechReasonError(f"device {device!r}: MPS is not available here; valid here: 'cpu'")
    return device


def check_model_name(name: str) -> str:
    """Refuse a model name that cannot load, without loading it: an unknown short name,
    a directory that is not an HF model, a bundled model whose package is missing."""
    from mechreason.model.tiny import TINY_FAMILIES
    from mechreason.model.weights import BUNDLED, RANDOM_CONFIGS, RANDOM_PREFIX, TINY_RANDOM

    tiny = [f"{TINY_RANDOM}-{f}" for f in TINY_FAMILIES if f != "llama"]
    if name == TINY_RANDOM or name in BUNDLED or name in tiny:
        return name
    if name.startswith(RANDOM_PREFIX):
        arch = name.removeprefix(RANDOM_PREFIX)
        if arch not in RANDOM_CONFIGS:
            raise unknown("random architecture", arch, RANDOM_CONFIGS)
        return name
    p = Path(name)
    if p.is_dir():
        return _check_model_dir(p)
    if p.exists():
        raise MechReasonError(f"model {name!r} is a file; give a model name or an HF model "
                              "directory (config.json + weights)")
    if _HUB_ID.fullmatch(name) and not name.startswith((".", "/")):
        return name
    raise unknown("model", name, [TINY_RANDOM, *tiny, *BUNDLED, "<hub id>", "<local dir>"])


def _check_model_dir(p: Path) -> str:
    if not (p / "config.json").is_file():
        raise MechReasonError(f"directory {str(p)!r} is not a model: it has no config.json "
                              "(expected an HF model directory: config.json, tokenizer, weights)")
    if not any(f.name.endswith(_WEIGHT_SUFFIXES) for f in p.iterdir()):
        raise MechReasonError(f"directory {str(p)!r} is not a model: no weight files "
                              f"({', '.join(_WEIGHT_SUFFIXES)})")
    from mechreason.artifacts import read_json

    cfg = read_json(p / "config.json", "model config")
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise MechReasonError(f"{str(p / 'config.json')!r} is not an HF model config "
                              "(no 'model_type')")
    return str(p)


def check_input_file(path: str, flag: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse an input file that is missing, a directory, of the wrong kind, or not UTF-8
    text (read whole here: input files are small next to what is computed from them)."""
    from mechreason.artifacts import read_text

    p = Path(path)
    if p.is_dir():
        raise MechReasonError(f"{flag} {path!r} is a directory; it needs a file")
    if suffixes and p.suffix not in suffixes:
        raise MechReasonError(f"{flag} {path!r} should be a {' or '.join(suffixes)} file")
    read_text(p, f"{flag} file")
    return p


def check_token_ids(ids: Iterable[int], vocab: int, where: str) -> None:
    """Refuse token ids outside ``0..vocab-1`` (ids of another model's vocabulary)."""
    bad = [t for t in ids if not 0 <= int(t) < vocab]
    if bad:
        raise MechReasonError(f"{where}: token id {bad[0]} is outside this model's vocabulary "
                              f"(valid 0..{vocab - 1}); were these made by another model?")


def context_length(model: Any) -> int | None:
    """The longest sequence the model's positions cover (None: unknown)."""
    cfg = getattr(getattr(model, "hf", None), "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    return None


def check_length(n_tokens: int, model: Any, where: str, *, flag: str = "--max-length") -> None:
    """Refuse an input longer than the model's context (truncation needs ``flag``)."""
    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        raise MechReasonError(f"{where} has {n_tokens} tokens, more than {model.name}'s context "
                              f"of {limit}; shorten it or pass {flag} {limit} to truncate")


def check_same_model(rec: dict[str, Any], model: Any, where: str) -> None:
    """Refuse a trace record made by another model (its token ids belong to another
    vocabulary, its activations to other weights)."""
    got, have = rec.get("weights_hash"), getattr(model, "weights_hash", None)
    if got and have and got != have:
        raise MechReasonError(f"{where} was made by model {rec.get('model')!r} (weights "
                              f"{str(got)[:24]}), not {model.name!r} (weights {str(have)[:24]}); "
                              f"pass --model {rec.get('model')} or use traces of this model")


def finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise MechReasonError(f"{name} {value!r} is not a finite number")
    return value


def check_finite_tensor(t: Any, stage: str, what: str) -> None:
    """Raise naming ``stage`` when a computed tensor holds NaN or inf (nothing written)."""
    import torch

    if t.numel() and not bool(torch.isfinite(t).all()):
        n = int((~torch.isfinite(t)).sum())
        raise MechReasonError(f"{stage}: {what} became non-finite ({n} NaN/inf values of "
                              f"{t.numel()}); nothing was written. Check the inputs (weights, "
                              "coefficients, learning rate)")
