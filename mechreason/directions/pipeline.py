"""Directions, the whole stage: captured activations -> contrast -> layer sweep -> artifact.

:func:`compute_directions` builds the contrast (stage 1), fits the chosen method
(stage 2) per hook with a held-out sweep split by problem id (stage 3), and returns a
:class:`~mechreason.directions.io.DirectionSet` ready to save or export (stage 5). The
CLI ``mechreason directions`` is a thin shell over :class:`DirectionsConfig`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from mechreason.directions.config import DirectionsConfig
from mechreason.directions.contrast import ContrastSet, build_contrast
from mechreason.directions.io import DirectionSet, export_gguf, save_direction, vectors_for_export
from mechreason.directions.methods import CITATIONS, get_method
from mechreason.directions.sweep import SweepResult, layer_sweep
from mechreason.errors import unknown

log = logging.getLogger(__name__)

BEST_RULE = "max held-out AUROC, ties (1e-9) to the earlier layer"


class DirectionsResult(NamedTuple):
    """The computed directions, the sweep behind them, and the groups used."""

    directions: DirectionSet
    sweep: SweepResult
    contrast: ContrastSet
    too_small: bool
    """Some group has fewer than ``min_problems`` problems."""


def compute_directions(cfg: DirectionsConfig) -> DirectionsResult:
    """Build the contrast, sweep every hook, and fit the final directions on all problems."""
    from mechreason.activations import ActivationStore

    stores = [ActivationStore(p) for p in cfg.acts]
    return directions_from_contrast(
        cfg, build_contrast(stores, cfg.contrast, cfg.aggregate, split_key=cfg.split_key))


def directions_from_contrast(cfg: DirectionsConfig, cs: ContrastSet) -> DirectionsResult:
    """:func:`compute_directions` on an already built (e.g. filtered) contrast set."""
    stores = cs.stores
    hooks = list(cfg.hooks) or cs.hooks
    missing = [h for h in hooks if h not in cs.hooks]
    if missing:
        raise unknown("captured hook", missing[0], cs.hooks)
    counts = cs.counts()
    too_small = min(counts["A_problems"], counts["B_problems"]) < cfg.min_problems
    if too_small:
        log.warning("contrast %s: a group has fewer than %d problems (%s); metrics are noisy",
                    cs.spec, cfg.min_problems, counts)
    groups = [(h, *cs.groups(h)) for h in hooks]
    res = layer_sweep(get_method(cfg.method), groups, test_frac=cfg.test_frac, seed=cfg.seed)
    metrics = [_metrics_row(r) for r in res.layers]
    name_a, name_b = cs.spec.names
    info = stores[0].meta.get("model") or {}
    model = info.get("name") or stores[0].cfg.get("model")
    ds = DirectionSet(vectors=res.directions, hooks=hooks, method=cfg.method,
                      contrast=str(cs.spec), aggregate=cfg.aggregate,
                      groups={"A": name_a, "B": name_b}, counts=counts, metrics=metrics,
                      best_hook=hooks[res.best], best_rule=BEST_RULE, model=model,
                      model_type=info.get("model_type"))
    return DirectionsResult(ds, res, cs, too_small)


def _metrics_row(r) -> dict[str, object]:
    s = r.sep
    return {"hook": r.hook, "n_train": list(r.n_train), "n_test": list(r.n_test),
            "auroc": s.auroc, "auroc_ci95": [s.auroc_lo, s.auroc_hi], "accuracy": s.accuracy,
            "cohens_d": s.cohens_d, "random_auroc": r.random_auroc,
            "random_p95": r.random_p95, "norm": r.norm}


def save_result(out: str | os.PathLike[str], cfg: DirectionsConfig, res: DirectionsResult) -> Path:
    """Write the direction directory, with the split and citation in ``meta.json``."""
    split = res.sweep.split
    return save_direction(out, res.directions, cfg=cfg, stage="directions",
                          citation=CITATIONS[cfg.method], acts=list(cfg.acts),
                          split={"key": res.contrast.split_key,
                                 "test_problems": sorted(split.test_ids),
                                 "train_problems": sorted(split.train_ids)},
                          too_small=res.too_small)


def export_result(path: str | os.PathLike[str], ds: DirectionSet, layers: str | list[int],
                  model_hint: str | None = None) -> list[int]:
    """Export ``layers`` (best, all, or numbers) of ``ds`` as a llama.cpp control vector.

    The model hint defaults to the architecture family (``llama``), as repeng
    (``model.config.model_type``) and llama.cpp's cvector-generator write it.
    """
    vecs = vectors_for_export(ds, layers)
    hint = model_hint or ds.model_type or ds.model or "unknown"
    return export_gguf(path, vecs, model_hint=hint, skip_layer0=layers == "all")
