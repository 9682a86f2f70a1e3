"""A steering experiment: the same problems unsteered, steered at each coefficient and,
as a control, steered by an equal-norm random direction (or a random latent), written
as trace files plus a summary (DESIGN sections 5 and 8; He et al. 2026 for first-token
steering, Hojer et al. 2025 for KL).

Output directory: ``unsteered.jsonl``, ``steered.jsonl`` and ``control.jsonl`` (one
coefficient) or ``steered_a{A}.jsonl`` / ``control_a{A}.jsonl`` (several), all in the
traces format with the same problems and seeds; ``summary.json`` (one row per arm);
``cfg.json``; ``meta.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any

from mechreason.errors import MechReasonError
from mechreason.model.weights import DEFAULT_MODEL
from mechreason.steering.interventions import Add, AddLatent, Clamp, Intervention
from mechreason.steering.positions import Positions

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SteerConfig:
    """One steering experiment."""

    model: str = DEFAULT_MODEL
    """Model name (see ``mechreason models``)."""
    vector: str | None = None
    """A direction directory (``direction.safetensors`` + ``direction.json``)."""
    hook: str | None = None
    """Hook to steer (default: the direction's best hook, or the SAE's hook)."""
    sae: str | None = None
    """An SAE folder (SAELens format); with ``latent``."""
    latent: int | None = None
    """The SAE latent to steer."""
    mode: str = "add"
    """For a latent: ``add`` (raise its value by alpha) or ``clamp`` (set it to alpha)."""
    alphas: tuple[float, ...] = (1.0,)
    """Coefficients; each is one steered arm (and one control arm)."""
    positions: str = "first"
    """Where to steer: ``first``, ``all``, ``generated``, ``sentence-starts``, ``window:N``..."""
    task: str = "arithmetic"
    """Problem source: ``arithmetic``, ``gsm8k`` or ``math``."""
    n: int = 30
    """How many problems."""
    difficulty: int | None = None
    """Keep only this difficulty."""
    data_file: str | None = None
    """Local dataset file for gsm8k / math."""
    style: str = "direct"
    """Prompt style (``direct``, ``cot``, ...)."""
    max_new_tokens: int = 128
    """Length cap per response."""
    temperature: float = 0.0
    """0 is greedy."""
    seed: int = 0
    """Problem, sampling and control seed."""
    batch_size: int = 16
    """Generation batch size."""
    control: bool = True
    """Also run an equal-norm random direction (random latent) at each coefficient."""
    kl_texts: int = 8
    """How many unsteered responses serve as the fixed texts for KL (0: skip)."""

    def __post_init__(self) -> None:
        if (self.vector is None) == (self.sae is None):
            raise MechReasonError("give exactly one of --vector DIR or --sae DIR --latent I")
        if self.sae is not None and self.latent is None:
            raise MechReasonError("--sae needs --latent I")
        if self.mode not in ("add", "clamp"):
            raise MechReasonError(f"unknown mode {self.mode!r}; valid: 'add', 'clamp'")
        if not self.alphas:
            raise MechReasonError("give at least one alpha")
        Positions.parse(self.positions)
        if self.n < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise MechReasonError("n, max_new_tokens and batch_size must be >= 1")
        if self.kl_texts < 0:
            raise MechReasonError(f"kl_texts must be >= 0, got {self.kl_texts}")
        bad = [a for a in self.alphas if not math.isfinite(a)]
        if bad or not math.isfinite(self.temperature) or self.temperature < 0:
            raise MechReasonError(f"alphas and temperature must be finite (temperature >= 0), "
                                  f"got {bad[0] if bad else self.temperature}")


def _arms(cfg: SteerConfig, model: Any) -> tuple[dict[str, list[Intervention]], dict[str, Any]]:
    """Name -> interventions for every steered and control arm, and what was steered."""
    from mechreason.steering.evaluate import random_latent, random_like

    arms: dict[str, list[Intervention]] = {}
    tag = (lambda a: "") if len(cfg.alphas) == 1 else (lambda a: f"_a{a:g}")
    if cfg.vector is not None:
        from mechreason.directions.io import direction_vector

        vec, hook = direction_vector(cfg.vector, hook=cfg.hook)
        info = {"vector": cfg.vector, "hook": hook, "norm": float(vec.norm())}
        ctrl = random_like(vec, cfg.seed)
        for a in cfg.alphas:
            arms[f"steered{tag(a)}"] = [Add(hook=hook, vector=vec, alpha=a, positions=cfg.positions)]
            if cfg.control:
                arms[f"control{tag(a)}"] = [Add(hook=hook, vector=ctrl, alpha=a,
                                                 positions=cfg.positions)]
        return arms, info
    from mechreason.sae.io import load_sae

    sae = load_sae(cfg.sae, model=model, hook=cfg.hook)  # type: ignore[arg-type]
    assert cfg.latent is not None
    kind = Clamp if cfg.mode == "clamp" else AddLatent
    other = random_latent(int(sae.W_dec.shape[0]), cfg.latent, cfg.seed)
    info = {"sae": cfg.sae, "latent": cfg.latent, "control_latent": other, "mode": cfg.mode}
    for a in cfg.alphas:
        arms[f"steered{tag(a)}"] = [kind(hook=cfg.hook, sae=sae, latent=cfg.latent,
                                         alpha=a, positions=cfg.positions)]
        if cfg.control:
            arms[f"control{tag(a)}"] = [kind(hook=cfg.hook, sae=sae, latent=other,
                                             alpha=a, positions=cfg.positions)]
    return arms, info


def run_experiment(cfg: SteerConfig, out: str | os.PathLike[str], *,
                   progress: bool = False, model: Any = None) -> list[dict[str, Any]]:
    """Run every arm (resuming finished records) and write the summary.

    ``model``: an already loaded :class:`mechreason.model.loading.Model` of ``cfg.model`` (its
    device and dtype are kept); None loads ``cfg.model`` with the defaults."""
    from mechreason.artifacts import artifact_path, write_json
    from mechreason.model.loading import load_model
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.steering.engine import Steering
    from mechreason.traces.tasks import make_problems

    problems = make_problems(cfg.task, cfg.n, seed=cfg.seed, difficulty=cfg.difficulty,
                             data_file=cfg.data_file)
    if model is None:
        model = load_model(cfg.model)
    elif model.name != cfg.model:
        raise MechReasonError(f"run_experiment got model {model.name!r} but its config names {cfg.model!r}")
    arms, info = _arms(cfg, model)
    for ivs in arms.values():  # validate every arm before any long work
        Steering(model, ivs)
    root = check_out_dir(out)
    with output_lock(root):
        _check_fingerprint(cfg, model, root)
        write_json(artifact_path(root, "cfg"), cfg)
        return _run_arms(cfg, model, problems, arms, info, root, progress)


def _check_fingerprint(cfg: SteerConfig, model: Any, root: Path) -> None:
    """Everything the steered records depend on: the config, the model's weights and
    the content of the direction or SAE file."""
    from mechreason.artifacts import artifact_path, file_sha256
    from mechreason.outputs import check_fingerprint

    src = (artifact_path(cfg.vector, "direction") if cfg.vector is not None
           else artifact_path(str(cfg.sae), "sae_weights"))
    fp = {"stage": "steer", "cfg": cfg, "weights_sha256": model.weights_hash,
          "source_sha256": file_sha256(src) if src.is_file() else None}
    check_fingerprint(root, fp, what="steering experiment")


def _run_arms(cfg: SteerConfig, model: Any, problems: Any, arms: dict[str, Any],
              info: dict[str, Any], root: Path, progress: bool) -> list[dict[str, Any]]:
    from mechreason.artifacts import artifact_path, write_json, write_meta
    from mechreason.model.generation import SamplingConfig
    from mechreason.steering.evaluate import kl_vs_unsteered, run_arm, summarize_arm

    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              seed=cfg.seed, batch_size=cfg.batch_size)
    kw = dict(style=cfg.style, sampling=sampling, progress=progress)
    base = run_arm(model, problems, root / "unsteered.jsonl", **kw)  # type: ignore[arg-type]
    texts = [(r["prompt_ids"], r["generated_ids"]) for r in base[:cfg.kl_texts]
             if r["generated_ids"]]
    rows = [{"arm": "unsteered", "alpha": 0.0, **summarize_arm(base)}]
    for name, ivs in arms.items():
        log.info("arm %s", name)
        recs = run_arm(model, problems, root / f"{name}.jsonl", interventions=ivs,
                       **kw)  # type: ignore[arg-type]
        row = {"arm": name, "alpha": ivs[0].alpha, **summarize_arm(recs)}
        if texts:
            row["kl"], row["kl_low"], row["kl_high"] = kl_vs_unsteered(model, ivs, texts)
            if not math.isfinite(row["kl"]):
                raise MechReasonError(f"steer: the KL of arm {name!r} (alpha {ivs[0].alpha:g}) "
                                      f"is {row['kl']}; nothing was written for it. Lower --alpha")
        rows.append(row)
    write_json(artifact_path(root, "summary"), {"steering": info, "arms": rows})
    write_meta(root, model, seed=cfg.seed, positions=cfg.positions, **info)
    return rows


def steering_sweep(model: Any, problems: Any, vectors: dict[str, Any], *, alphas: tuple[float, ...],
          seeds: tuple[int, ...], out: str | os.PathLike[str], style: str = "direct",
          positions: str = "first", max_new_tokens: int = 128, temperature: float = 0.0,
          batch_size: int = 16) -> list[dict[str, Any]]:
    """Alpha x layer x seed sweep of a direction (``vectors``: hook -> vector), with an
    equal-norm random direction per seed as the control. The seed sets the control
    direction and, when ``temperature > 0``, the sampling. One row per (hook, alpha,
    seed, arm); trace files go under ``out``."""
    from mechreason.model.generation import SamplingConfig
    from mechreason.steering.evaluate import random_like, run_arm, summarize_arm

    root = Path(out)
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature,
                                  seed=seed, batch_size=batch_size)
        base = run_arm(model, problems, root / f"unsteered_s{seed}.jsonl", style=style,
                       sampling=sampling)
        rows.append({"hook": None, "alpha": 0.0, "seed": seed, "arm": "unsteered",
                     **summarize_arm(base)})
        for hook, vec in vectors.items():
            arms = {"steered": vec, "control": random_like(vec, seed)}
            for alpha in alphas:
                for arm, v in arms.items():
                    name = f"{arm}_{hook}_a{alpha:g}_s{seed}.jsonl"
                    iv = Add(hook=hook, vector=v, alpha=alpha, positions=positions)
                    recs = run_arm(model, problems, root / name, style=style,
                                   sampling=sampling, interventions=[iv])
                    rows.append({"hook": hook, "alpha": alpha, "seed": seed, "arm": arm,
                                 **summarize_arm(recs)})
    return rows


def across_seeds(rows: list[dict[str, Any]], metric: str = "accuracy") -> list[dict[str, Any]]:
    """Mean of ``metric`` over seeds per (hook, alpha, arm), with its interval."""
    from mechreason.stats import mean_ci

    groups: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        groups.setdefault((r["hook"], r["alpha"], r["arm"]), []).append(float(r[metric]))
    out = []
    for (hook, alpha, arm), xs in groups.items():
        m, lo, hi = mean_ci(xs)
        out.append({"hook": hook, "alpha": alpha, "arm": arm, "n_seeds": len(xs),
                    metric: m, f"{metric}_low": lo, f"{metric}_high": hi})
    return out
