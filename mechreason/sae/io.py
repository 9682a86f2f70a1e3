"""SAE stage, file format: the SAELens 6 folder (``cfg.json`` + ``sae_weights.safetensors``
with ``W_enc`` (d_in, d_sae), ``W_dec`` (d_sae, d_in), ``b_enc``, ``b_dec`` and, for
JumpReLU, ``threshold``), so ``sae_lens.SAE.load_from_disk`` reads what we write and
we read any SAELens SAE by local path (or by release id through ``sae_lens`` when a hub
is reachable).

Activation normalisation is folded into the weights on save (SAELens applies none at
inference); the factor is recorded in ``metadata.mechreason.norm_scale``. Weights may be
stored in float16 to halve the file; ``cfg.json`` keeps ``dtype: float32`` so both
libraries compute in float32.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import torch

from mechreason.artifacts import (
    artifact_path,
    read_json,
    save_tensors,
    write_json,
    write_meta,
)
from mechreason.errors import MechReasonError, unknown
from mechreason.sae.model import SAEConfig, SparseAutoencoder

# SAELens architecture name <-> ours.
_TO_SAELENS = {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu"}
_FROM_SAELENS = {v: k for k, v in _TO_SAELENS.items()}
_STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _sae_lens_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sae-lens")
    except PackageNotFoundError:  # the format is 6.x; say so for its loader
        return "6.0.0"


def save_sae(sae: SparseAutoencoder, path: str | os.PathLike[str], *, store_dtype: str = "float32",
             model: Any = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``sae`` as a SAELens folder (plus our ``meta.json``); the caller's SAE is
    not modified. ``extra`` goes into ``metadata.mechreason`` (training figures...)."""
    if store_dtype not in _STORE_DTYPES:
        raise unknown("storage dtype", store_dtype, _STORE_DTYPES)
    path = Path(path)
    folded = copy.deepcopy(sae).float()
    scale = folded.fold_norm_scale()
    c = sae.cfg
    state = {n: p.detach().to(_STORE_DTYPES[store_dtype]) for n, p in folded.named_parameters()}
    cfg: dict[str, Any] = {
        "d_in": c.d_in, "d_sae": c.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": True, "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"sae_lens_version": _sae_lens_version(),
                     "sae_lens_training_version": _sae_lens_version(),
                     "hook_name": c.hook, "model_name": c.model,
                     "mechreason": {"arch": c.arch, "norm_scale": scale,
                                    "store_dtype": store_dtype, **(extra or {})}},
        "architecture": _TO_SAELENS[c.arch],
    }
    if c.arch == "topk":
        cfg["k"] = c.k
        cfg["rescale_acts_by_decoder_norm"] = False
    save_tensors(artifact_path(path, "sae_weights"), state)
    write_json(artifact_path(path, "cfg"), cfg)
    write_meta(path, model, stage="sae", hook=c.hook, arch=c.arch)
    return path


def load_sae(source: str | os.PathLike[str], *, sae_id: str | None = None, device: str = "cpu",
             model: Any = None, hook: str | None = None) -> SparseAutoencoder:
    """Load an SAE from a SAELens folder (ours or theirs), or ``release`` + ``sae_id``
    through ``sae_lens`` (needs a reachable hub). With ``model`` (and ``hook``), check
    that the SAE fits it (:func:`check_sae_fits`)."""
    folder = Path(source)
    if sae_id is None and not folder.is_dir():
        raise MechReasonError(
            f"no SAE folder at {str(source)!r} (a SAELens folder holds cfg.json and "
            "sae_weights.safetensors); to load a SAELens release give its sae_id too")
    if sae_id is None:
        sae = _from_folder(folder)
    else:
        sae = _from_release(str(source), sae_id)
    sae = sae.to(device)
    if model is not None:
        check_sae_fits(sae, model, hook)
    return sae


def _from_folder(folder: Path) -> SparseAutoencoder:
    cfg_path, w_path = artifact_path(folder, "cfg"), artifact_path(folder, "sae_weights")
    if not w_path.is_file():
        raise MechReasonError(f"{str(folder)!r} has no {w_path.name}: not a SAELens SAE folder")
    from mechreason.artifacts import load_tensors
    from mechreason.validate import check_finite_tensor

    cfg = read_json(cfg_path, "SAE config")
    if not isinstance(cfg, dict) or "d_in" not in cfg or "d_sae" not in cfg:
        raise MechReasonError(f"{str(cfg_path)!r} is not a SAELens config (needs d_in, d_sae)")
    tensors = load_tensors(w_path, "SAE weights")
    for name, t in tensors.items():
        check_finite_tensor(t, f"loading the SAE {str(folder)!r}", f"weight {name}")
    return from_sae_lens_dict(cfg, tensors)


def _from_release(release: str, sae_id: str) -> SparseAutoencoder:
    try:
        from sae_lens import SAE
    except ImportError as e:  # pragma: no cover - sae-lens is a dependency
        raise MechReasonError("loading a release id needs sae-lens installed") from e
    try:
        theirs = SAE.from_pretrained(release, sae_id, device="cpu")
    except (OSError, ValueError) as e:
        raise MechReasonError(
            f"could not load SAELens release {release!r} / {sae_id!r} "
            f"(unknown id, or no hub reachable): {e}") from e
    cfg = theirs.cfg.to_dict()
    return from_sae_lens_dict(cfg, {k: v.detach() for k, v in theirs.state_dict().items()})


def _normalise_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    """Accept pre-6.0 SAELens configs (hook_point, activation_fn_str, top-level k)."""
    cfg = dict(cfg)
    meta = dict(cfg.get("metadata") or {})
    meta.setdefault("hook_name", cfg.get("hook_name") or cfg.get("hook_point"))
    meta.setdefault("model_name", cfg.get("model_name"))
    cfg["metadata"] = meta
    if "architecture" not in cfg:
        act = cfg.get("activation_fn") or cfg.get("activation_fn_str") or "relu"
        k = (cfg.get("activation_fn_kwargs") or {}).get("k")
        cfg["architecture"] = "topk" if act == "topk" else "standard"
        if k is not None:
            cfg["k"] = k
    return cfg


def from_sae_lens_dict(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> SparseAutoencoder:
    """Build our SAE from a SAELens config dict and state dict (float32)."""
    cfg = _normalise_cfg(cfg)
    arch = _FROM_SAELENS.get(cfg["architecture"])
    if arch is None:
        raise unknown("SAELens architecture (supported)", cfg["architecture"], _FROM_SAELENS)
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", "expected_average_only_in"):  # the latter is a no-op at inference
        raise MechReasonError(f"SAE uses normalize_activations={norm!r}, which mechreason "
                              "does not support; supported: 'none'")
    if cfg.get("apply_b_dec_to_input", True) is not True:
        raise MechReasonError("SAE has apply_b_dec_to_input=False, which mechreason does "
                              "not support")
    missing = {"W_enc", "W_dec", "b_enc", "b_dec"} - set(state)
    if arch == "jumprelu" and "threshold" not in state:
        missing.add("threshold")
    if missing:
        raise MechReasonError(f"SAE weights lack {sorted(missing)}")
    meta = cfg["metadata"]
    ours = SAEConfig(d_in=int(cfg["d_in"]), d_sae=int(cfg["d_sae"]), arch=arch,  # type: ignore[arg-type]
                     k=int(cfg["k"]) if arch == "topk" else None,
                     hook=meta.get("hook_name"), model=meta.get("model_name"))
    sae = SparseAutoencoder(ours)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            t = state[name].float()
            if t.shape != p.shape:
                raise MechReasonError(f"SAE weight {name} has shape {tuple(t.shape)}, "
                                      f"cfg.json implies {tuple(p.shape)}")
            p.copy_(t)
        if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
            n = sae.W_dec.norm(dim=-1)  # fold the norms: selection and outputs unchanged
            sae.b_enc.mul_(n)
            sae.W_enc.mul_(n[None, :])
            sae.W_dec.div_(n[:, None])
    sae.eval()
    return sae


def sae_hook(sae: Any) -> str | None:
    """The hook an SAE was trained on, from a mechreason SAE's ``cfg.hook`` or a SAELens
    SAE's ``cfg.metadata.hook_name`` (None when it records none)."""
    cfg = getattr(sae, "cfg", None)
    for holder in (getattr(cfg, "metadata", None), cfg):
        for attr in ("hook_name", "hook"):
            name = getattr(holder, attr, None)
            if isinstance(name, str) and name:
                return name
    return None


def check_sae_fits(sae: Any, target: Any, hook: str | None = None) -> str:
    """Raise unless ``sae`` (mechreason's or SAELens's) reads ``target``'s activations
    at ``hook`` (default: the SAE's own hook): ``target`` is a loaded model or an
    :class:`~mechreason.activations.ActivationStore`. The one fit check of every stage.
    Returns the hook name."""
    own = sae_hook(sae)
    hook = hook or own
    if hook is None:
        raise MechReasonError("the SAE records no hook name; pass the hook it reads")
    if hasattr(target, "check_hook"):
        target.check_hook(hook)
        what = f"model {target.name!r}"
    elif hook not in target.hooks:
        raise MechReasonError(f"SAE hook {hook!r} is not in the store; captured: {target.hooks}")
    else:
        what = "the store's"
    if own is not None and hook != own:
        raise MechReasonError(f"SAE was trained on hook {own!r}, not {hook!r}")
    d_in = int(sae.W_dec.shape[-1])
    if re.search(r"resid|attn_out|mlp_out|embed", hook) and d_in != target.d_model:
        raise MechReasonError(f"SAE d_in={d_in} does not match {what} d_model={target.d_model} "
                              f"at {hook!r}")
    return hook
