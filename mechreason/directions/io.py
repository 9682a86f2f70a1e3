"""Directions, stage 5: the direction directory and the llama.cpp control-vector GGUF.

A direction directory (DESIGN section 4) holds ``direction.safetensors`` (one 1-D float32
tensor per hook, keyed by the hook name), the ``direction.json`` sidecar (hooks, layers,
method, groups, counts, norms, per-layer metrics, the chosen layer), ``cfg.json`` and
``meta.json``.

The GGUF export follows llama.cpp's ``common_control_vector_load_one``: 1-D F32 tensors
named ``direction.{k}``, where direction k is added to the output of block k (0-based)
at every position, and k = 0 is rejected by the loader. So ``blocks.{L}.hook_resid_post``
is written as ``direction.{L}`` for L >= 1, and block 0 cannot be exported. The header
carries ``general.architecture = controlvector``, ``controlvector.model_hint`` and
``controlvector.layer_count``, as repeng (Vogel 2024) writes and reads them.
"""


from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from mechreason.artifacts import (
    artifact_path,
    atomic_path,
    read_json,
    save_tensors,
    write_json,
    write_meta,
)
from mechreason.errors import MechReasonError

log = logging.getLogger(__name__)

ARCH = "controlvector"
_RESID_POST = re.compile(r"blocks\.(\d+)\.hook_resid_post")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DirectionSet:
    """Directions at one or more hooks, with what produced them."""

    vectors: Float[Tensor, "hook d"]
    hooks: list[str]
    method: str
    contrast: str = ""
    """The contrast spec, e.g. ``style=cot:direct``."""
    aggregate: str = ""
    groups: dict[str, str] = dataclasses.field(default_factory=dict)
    """Group name (A, B) -> its selection."""
    counts: dict[str, int] = dataclasses.field(default_factory=dict)
    """Vectors and problems per group."""
    metrics: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """One dict per hook: the held-out sweep row."""
    best_hook: str | None = None
    best_rule: str = ""
    model: str | None = None
    model_type: str | None = None
    """HF's architecture family (``llama``): the control vector's default model hint."""

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.hooks):
            raise MechReasonError(f"vectors of shape {tuple(self.vectors.shape)} do not match "
                                  f"{len(self.hooks)} hooks")
        if len(set(self.hooks)) != len(self.hooks):
            raise MechReasonError(f"duplicate hooks in {self.hooks}")
        if self.best_hook is not None and self.best_hook not in self.hooks:
            raise MechReasonError(f"best hook {self.best_hook!r} is not one of {self.hooks}")

    def vector(self, hook: str) -> Float[Tensor, " d"]:
        if hook not in self.hooks:
            from mechreason.errors import unknown

            raise unknown("hook of this direction", hook, self.hooks)
        return self.vectors[self.hooks.index(hook)]


def hook_layer(hook: str) -> int | None:
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else None


def save_direction(root: str | os.PathLike[str], ds: DirectionSet, *, cfg: Any = None,
                   model: Any = None, **meta: Any) -> Path:
    """Write the direction directory; returns its path."""
    root = Path(root)
    save_tensors(artifact_path(root, "direction"),
                 {h: ds.vectors[i].float().contiguous() for i, h in enumerate(ds.hooks)})
    side = dataclasses.asdict(ds)
    side.pop("vectors")
    side.update(layers=[hook_layer(h) for h in ds.hooks], d_model=int(ds.vectors.shape[1]),
                norms=[float(v.norm()) for v in ds.vectors])
    write_json(artifact_path(root, "direction_json"), side)
    write_json(artifact_path(root, "cfg"), cfg if cfg is not None else {})
    write_meta(root, model, hooks=ds.hooks, **meta)
    return root


def _read_direction_dir(root: Path) -> tuple[dict[str, Tensor], dict[str, Any], Path]:
    """A direction directory's tensors (by hook name), its ``direction.json`` ({} when
    absent) and the tensor file's path; the one reader behind both loaders below."""
    from mechreason.artifacts import load_tensors

    path = artifact_path(root, "direction")
    if not path.is_file():
        raise MechReasonError(f"{str(root)!r} is not a direction directory (no {path.name})")
    tensors = load_tensors(path, "direction")
    side = artifact_path(root, "direction_json")
    info = read_json(side, side.name) if side.is_file() else {}
    if not isinstance(info, dict):
        raise MechReasonError(f"{str(side)!r} is not a direction-info object")
    return tensors, info, path


def load_direction(root: str | os.PathLike[str]) -> DirectionSet:
    """Read a direction directory written by :func:`save_direction` (every hook)."""
    tensors, side, path = _read_direction_dir(Path(root))
    if "hooks" not in side:
        raise MechReasonError(f"{str(root)!r} was not written by the directions stage (its "
                              "direction.json names no 'hooks'); read one vector with "
                              "direction_vector()")
    missing = [h for h in side["hooks"] if h not in tensors]
    if missing:
        raise MechReasonError(f"{path} lacks tensors for hooks {missing}")
    keep = {f.name for f in dataclasses.fields(DirectionSet)} - {"vectors"}
    return DirectionSet(vectors=torch.stack([tensors[h] for h in side["hooks"]]),
                        **{k: v for k, v in side.items() if k in keep})


def direction_vector(root: str | os.PathLike[str], *, hook: str | None = None
                     ) -> tuple[Float[Tensor, " d"], str]:
    """One steering vector from a direction directory, as ``(vector, hook)``: the
    directions stage's (one tensor per hook, ``best_hook`` the default) or a foreign
    one (a single tensor, ``direction.json`` naming ``hook`` or ``layer``). ``hook``
    picks one of several. The vector must be one finite, non-zero (d,) vector."""
    from mechreason.model.loading import hook_name

    tensors, info, path = _read_direction_dir(Path(root))
    default = info.get("best_hook") or info.get("hook") or (
        hook_name(int(info["layer"])) if isinstance(info.get("layer"), int) else None)
    want = hook or default
    if want in tensors:
        return _steerable(tensors[want], path, str(want)), str(want)
    if len(tensors) == 1 and want:
        return _steerable(next(iter(tensors.values())), path, str(want)), str(want)
    if hook is not None:
        from mechreason.errors import unknown

        raise unknown("hook of this direction", hook, sorted(tensors))
    raise MechReasonError(f"{str(root)!r} holds directions at {sorted(tensors)} and names no "
                          f"best hook; pass --hook")


def _steerable(t: Tensor, path: Path, hook: str) -> Tensor:
    """A direction as one finite, non-zero vector: a (d,) or (1, d) tensor; a matrix
    (several directions) is refused rather than flattened."""
    if t.ndim != 1 and not (t.ndim == 2 and t.shape[0] == 1):
        raise MechReasonError(f"{str(path)!r} holds a {tuple(t.shape)} tensor at {hook!r}; a "
                              "steering direction is one vector of shape (d_model,)")
    v = t.float().reshape(-1)
    if not bool(torch.isfinite(v).all()):
        raise MechReasonError(f"{str(path)!r}: the direction at {hook!r} holds NaN or inf")
    if float(v.norm()) == 0.0:
        raise MechReasonError(f"{str(path)!r}: the direction at {hook!r} is all zeros; "
                              "steering by it changes nothing")
    return v


def gguf_layer(hook: str) -> int:
    """The control-vector layer index of a hook (``blocks.L.hook_resid_post`` -> L >= 1)."""
    m = _RESID_POST.fullmatch(hook)
    if not m:
        raise MechReasonError(f"only blocks.L.hook_resid_post directions can be exported to a "
                              f"llama.cpp control vector (it adds to block outputs); got {hook!r}")
    layer = int(m.group(1))
    if layer == 0:
        raise MechReasonError(
            "blocks.0.hook_resid_post cannot be exported: llama.cpp rejects direction.0 "
            "(its control vectors start at block 1); choose a layer >= 1")
    return layer


def export_gguf(path: str | os.PathLike[str], vectors: Mapping[str, Tensor], *,
                model_hint: str, skip_layer0: bool = False) -> list[int]:
    """Write ``vectors`` (hook -> 1-D tensor) as a control-vector GGUF; returns the layers.

    ``skip_layer0``: drop ``blocks.0.hook_resid_post`` with a warning instead of raising.
    """
    import gguf
    import numpy as np

    by_layer: dict[int, Tensor] = {}
    for hook, v in vectors.items():
        if skip_layer0 and hook == "blocks.0.hook_resid_post":
            log.warning("skipping %s: llama.cpp control vectors cannot hold block 0", hook)
            continue
        if v.ndim != 1 or not bool(torch.isfinite(v).all()):
            raise MechReasonError(f"direction for {hook!r} must be a finite 1-D vector, got "
                                  f"shape {tuple(v.shape)}")
        by_layer[gguf_layer(hook)] = v
    if not by_layer:
        raise MechReasonError("no exportable direction (need blocks.L.hook_resid_post, L >= 1)")
    widths = {int(v.shape[0]) for v in by_layer.values()}
    if len(widths) != 1:
        raise MechReasonError(f"directions have different widths {sorted(widths)}")
    with atomic_path(path) as tmp:
        w = gguf.GGUFWriter(str(tmp), ARCH)
        w.add_string(f"{ARCH}.model_hint", model_hint)
        w.add_uint32(f"{ARCH}.layer_count", len(by_layer))
        for layer in sorted(by_layer):
            w.add_tensor(f"direction.{layer}",
                         by_layer[layer].detach().cpu().float().numpy().astype(np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return sorted(by_layer)


class ControlVector(NamedTuple):
    """A control vector read from GGUF: layer (block index, >= 1) -> direction."""

    model_hint: str | None
    directions: dict[int, Float[Tensor, " d"]]

    def hooks(self) -> dict[str, Tensor]:
        """The same directions keyed by ``blocks.L.hook_resid_post``."""
        return {f"blocks.{k}.hook_resid_post": v for k, v in sorted(self.directions.items())}


def import_gguf(path: str | os.PathLike[str]) -> ControlVector:
    """Read a llama.cpp control-vector GGUF (ours, repeng's, or llama.cpp's own)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise MechReasonError(f"no such control-vector file: {str(path)!r}")
    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as e:
        raise MechReasonError(f"{str(path)!r} is not a readable GGUF file: {e}") from e
    arch = _field(reader, "general.architecture")
    if arch not in (None, ARCH):
        log.warning("%s: general.architecture is %r, not %r", path, arch, ARCH)
    out: dict[int, Tensor] = {}
    for t in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        if not m or int(m.group(1)) == 0:
            raise MechReasonError(f"{str(path)!r}: tensor {t.name!r} is not direction.{{k}} "
                                  "with k >= 1")
        if t.tensor_type != gguf.GGMLQuantizationType.F32 or len(t.shape) != 1:
            raise MechReasonError(f"{str(path)!r}: tensor {t.name!r} must be 1-D F32, got "
                                  f"{t.tensor_type.name} of shape {list(t.shape)}")
        out[int(m.group(1))] = torch.from_numpy(t.data.copy()).float()
    hint = _field(reader, f"{ARCH}.model_hint")
    return ControlVector(model_hint=None if hint is None else str(hint), directions=out)


def _field(reader: Any, key: str) -> Any:
    f = reader.get_field(key)
    return None if f is None else f.contents()


GGUF_LAYERS_HELP = ("all (every swept layer >= 1) | best | a range 10-15 | a list 3,5,7 "
                    "(ranges and numbers may mix: 3,10-12)")


def parse_gguf_layers(text: str) -> str | list[int]:
    """``"all"``, ``"best"``, or the layer numbers of a list / range such as ``3,10-12``."""
    text = text.strip()
    if text in ("all", "best"):
        return text
    layers: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, sep, hi = part.partition("-")
            span = range(int(lo), int(hi) + 1) if sep else range(int(lo), int(lo) + 1)
            if not span:
                raise ValueError(part)
            layers += [x for x in span if x not in layers]
    except ValueError:
        layers = []
    if not layers:
        raise MechReasonError(f"GGUF layers {text!r}: valid are {GGUF_LAYERS_HELP}")
    return layers


def vectors_for_export(ds: DirectionSet, layers: str | Sequence[int]) -> dict[str, Tensor]:
    """Pick what to export: ``"best"``, ``"all"`` (every swept ``resid_post`` hook; layer 0
    is dropped later) or layer numbers (each must have been swept)."""
    if layers == "best":
        hook = _best_exportable(ds)
        return {hook: ds.vector(hook)}
    if layers == "all":
        return {h: ds.vector(h) for h in ds.hooks if _RESID_POST.fullmatch(h)}
    if isinstance(layers, str):
        raise MechReasonError(f"unknown export layers {layers!r}; valid: {GGUF_LAYERS_HELP}")
    swept = sorted(n for h in ds.hooks if (n := _resid_layer(h)) is not None)
    out = {}
    for layer in layers:
        hook = f"blocks.{layer}.hook_resid_post"
        if hook not in ds.hooks:
            raise MechReasonError(f"layer {layer} was not swept; swept resid_post layers: {swept}")
        out[hook] = ds.vector(hook)
    return out


def _best_exportable(ds: DirectionSet) -> str:
    """The best hook, or, when that is block 0 (which llama.cpp rejects), the best
    ``resid_post`` hook of a later block by held-out AUROC (ties to the earlier layer)."""
    if ds.best_hook is None:
        raise MechReasonError("this direction has no best layer; name the layers")
    if (_resid_layer(ds.best_hook) or 0) >= 1:
        return ds.best_hook
    ok = [i for i, h in enumerate(ds.hooks) if (_resid_layer(h) or 0) >= 1]
    if not ok:
        raise MechReasonError(f"best hook {ds.best_hook!r} cannot be exported and no swept "
                              "blocks.L.hook_resid_post has L >= 1")

    def auroc(i: int) -> float:
        v = ds.metrics[i].get("auroc") if i < len(ds.metrics) else None
        return float(v) if v is not None else float("-inf")

    pick = ds.hooks[max(ok, key=lambda i: (auroc(i), -i))]
    log.warning("best hook %s is block 0, which llama.cpp cannot hold; exporting the best "
                "later layer, %s", ds.best_hook, pick)
    return pick


def _resid_layer(hook: str) -> int | None:
    m = _RESID_POST.fullmatch(hook)
    return int(m.group(1)) if m else None
