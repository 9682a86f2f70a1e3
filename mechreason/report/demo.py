"""Demo: the whole chain in one call, offline, stage by stage, each stage resumable.

procedural tasks -> cot and direct traces -> capture -> layer sweep of a label direction
within cot traces, whose groups share their prompts (Venhoff et al. 2025a), beside the
cot-vs-direct direction's sweep (the steering vector) -> shipped SAE features ranked by CoT-minus-direct
activation (He et al. 2026) -> first-token steering with a random control (He et al.
2026) -> thought anchors for one trace (Bogdan et al. 2025) -> report.

Every stage writes its own sub-directory of ``out`` and is skipped when its output
exists. A stage whose module is not in this build, or whose input is missing, is
recorded as such in ``summary.json`` and shown in the report; no result is faked.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mechreason import artifacts as A
from mechreason.artifacts import read_json, write_json
from mechreason.errors import MechReasonError
from mechreason.progress import bar, live
from mechreason.report.demo_config import (
    COT_VS_DIRECT,
    MODULES,
    NEEDS,
    SHIPPED_SAES,
    STAGE_ORDER,
    DemoConfig,
    available,
)

log = logging.getLogger(__name__)


class _Run:
    """State shared by the stages of one run."""

    def __init__(self, cfg: DemoConfig) -> None:
        self.cfg, self.out, self.sizes = cfg, Path(cfg.out), cfg.sizes
        self._model: Any = None
        self.figures: dict[str, Any] = {}

    @property
    def model(self) -> Any:
        if self._model is None:
            from mechreason.model.loading import load_model

            self._model = load_model(self.cfg.model, device=self.cfg.device, dtype=self.cfg.dtype)
        return self._model

    def problems(self) -> list[Any]:
        from mechreason.traces.tasks import make_problems

        return make_problems("arithmetic", self.sizes.n_problems, seed=self.cfg.seed)

    def records(self) -> list[dict[str, Any]]:
        from mechreason.traces.run import read_traces

        return read_traces(self.out / "traces" / A.TRACES_JSONL)


# --- stages: each returns key figures for summary.json, or raises ----------------


def stage_traces(run: _Run) -> dict[str, Any]:
    from mechreason.model.generation import SamplingConfig
    from mechreason.stats import wilson
    from mechreason.traces.run import run_traces

    path = run.out / "traces" / A.TRACES_JSONL
    path.parent.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Any] = {}
    for style, n_tok in (("cot", run.sizes.cot_tokens), ("direct", run.sizes.direct_tokens)):
        recs = run_traces(run.model, run.problems(), path, style=style,
                          sampling=SamplingConfig(max_new_tokens=n_tok, seed=run.cfg.seed),
                          progress=run.cfg.progress)
        k = sum(r["correct"] is True for r in recs)
        lo, hi = wilson(k, len(recs))
        figs |= {f"accuracy_{style}": k / len(recs), f"accuracy_{style}_ci95": [lo, hi],
                 f"mean_tokens_{style}": sum(r["n_generated_tokens"] for r in recs) / len(recs)}
    return figs


def stage_acts(run: _Run) -> dict[str, Any]:
    from mechreason.activations import CaptureConfig, capture

    # Every position: the direction reads the last prompt token, the SAE the generated ones.
    cfg = CaptureConfig(hooks=("blocks.*.hook_resid_post",), positions="all", dtype="float16")
    # capture draws its own tqdm bar: on a terminal only, so a log file stays clean
    store = capture(run.model, run.out / "traces" / A.TRACES_JSONL, cfg, run.out / "acts",
                    progress=run.cfg.progress and live())
    return {"captured_vectors": len(store), "captured_hooks": len(store.hooks)}


def stage_directions(run: _Run) -> dict[str, Any]:
    """The primary sweep (a label's sentences against the other sentences of the same cot
    traces: both groups share their prompts) in ``directions/``; the cot-vs-direct sweep,
    whose groups differ in their prompt text, in ``directions/cot_vs_direct/`` with its
    caveat (the steering stage steers with that direction)."""
    from mechreason.activations import ActivationStore
    from mechreason.artifacts import write_json
    from mechreason.directions.pipeline import (
        DirectionsConfig,
        compute_directions,
        directions_from_contrast,
        save_result,
    )
    from mechreason.report.demo_stages import COT_VS_DIRECT_CAVEAT, within_cot_contrast

    acts, out, figs = str(run.out / "acts"), run.out / "directions", {}
    small = min(10, run.sizes.n_problems)
    try:
        cs = within_cot_contrast(ActivationStore(acts))
    except MechReasonError as e:
        primary = {"status": "not run", "reason": str(e)}
        figs["primary_sweep"] = f"not run: {e}"
    else:
        cfg = DirectionsConfig(acts=(acts,), contrast=str(cs.spec), aggregate="sentence-start",
                               seed=run.cfg.seed, min_problems=small)
        res = directions_from_contrast(cfg, cs)
        save_result(out, cfg, res)
        c = cs.counts()
        primary = {"status": "done", "contrast": f"{cs.spec} vs the other sentences of the same "
                   f"cot traces (sentence starts; {c['A_problems']} problems, each in both groups)"}
        figs |= _best_figures(res.directions, "") | {"primary_contrast": primary["contrast"]}
    cfg2 = DirectionsConfig(acts=(acts,), contrast="style=cot:direct", aggregate="last-prompt",
                            seed=run.cfg.seed, min_problems=small)
    res2 = compute_directions(cfg2)
    write_json(out / A.SWEEPS_JSON, {"primary": primary, "cot_vs_direct": {
        "caveat": COT_VS_DIRECT_CAVEAT, "dir": COT_VS_DIRECT}})
    save_result(out / COT_VS_DIRECT, cfg2, res2)  # last: its file marks the stage done
    return figs | _best_figures(res2.directions, "cot_vs_direct_") | {
        "cot_vs_direct_caveat": COT_VS_DIRECT_CAVEAT}


def _best_figures(ds: Any, prefix: str) -> dict[str, Any]:
    best = next(m for m in ds.metrics if m["hook"] == ds.best_hook)
    return {f"{prefix}best_hook": best["hook"], f"{prefix}best_auroc": best["auroc"],
            f"{prefix}best_auroc_ci95": best["auroc_ci95"],
            f"{prefix}random_auroc_at_best": best["random_auroc"]}


def stage_sae(run: _Run) -> dict[str, Any]:
    from mechreason.activations import ActivationStore
    from mechreason.report.demo_stages import rank_features, shipped_sae
    from mechreason.sae.io import check_sae_fits, load_sae

    if run.cfg.sae:
        folder, why = run.cfg.sae, f"SAE {run.cfg.sae}"
    else:
        found, why = shipped_sae(run.model, SHIPPED_SAES)
        if found is None:
            raise _Skip(why)
        folder = str(found)
    sae = load_sae(folder, sae_id=run.cfg.sae_id)
    hook = check_sae_fits(sae, run.model)
    store = ActivationStore(run.out / "acts")
    if hook not in store.hooks:
        raise _Skip(f"{why} reads {hook}, which the capture lacks")
    records = {r["id"]: r for r in run.records()}
    s = rank_features(run.model, sae, store, records, run.out / "sae", hook=hook,
                      source=f"{folder} {run.cfg.sae_id or ''}".strip())
    trained = Path(folder) / A.SAE_TRAINING_JSON  # a mechreason-trained SAE's curves, for the report
    if trained.is_file():
        from mechreason.artifacts import atomic_path

        with atomic_path(run.out / "sae" / A.SAE_TRAINING_JSON) as tmp:
            tmp.write_bytes(trained.read_bytes())
    top = s["features"][0]
    return {"sae": f"{folder} {run.cfg.sae_id or ''}".strip(), "top_latent": top["latent"], "top_latent_score": top["score"],
            "top_latent_ci95": [top["lo"], top["hi"]]}


def stage_steering(run: _Run) -> dict[str, Any]:
    from mechreason.directions.io import load_direction
    from mechreason.report.readers import arms_as_dose_response
    from mechreason.steering.experiment import SteerConfig, run_experiment

    ds = load_direction(run.out / "directions" / COT_VS_DIRECT)
    hook = steering_hook(ds.metrics, run.model.n_layers)
    sz = run.sizes
    cfg = SteerConfig(model=run.cfg.model, vector=str(run.out / "directions" / COT_VS_DIRECT), hook=hook,
                      alphas=tuple(c for c in sz.coefs if c != 0), positions="first",
                      n=sz.steer_prompts, style="direct", max_new_tokens=sz.steer_tokens,
                      seed=run.cfg.seed, batch_size=8, kl_texts=min(8, sz.steer_prompts))
    out = run.out / "steering"
    run_experiment(cfg, out, progress=run.cfg.progress, model=run.model)
    dose = arms_as_dose_response(read_json(out / A.SUMMARY_JSON))
    tok = dose["metrics"]["generated tokens"]
    figs = {"steering_hook": hook, "steering_max_coef": dose["coefs"][-1],
            "steered_tokens_at_max_coef": tok["steered"]["mean"][-1],
            "control_tokens_at_max_coef": tok["control"]["mean"][-1],
            "unsteered_tokens": tok["steered"]["mean"][0]}
    steps = dose["metrics"].get("share reasoning in steps")
    if steps:
        for kind in ("steered", "control"):
            figs[f"{kind}_steps_share_at_max_coef"] = steps[kind]["mean"][-1]
            figs[f"{kind}_steps_share_at_max_coef_ci95"] = [steps[kind]["lo"][-1], steps[kind]["hi"][-1]]
        figs["unsteered_steps_share"] = steps["steered"]["mean"][0]
    return figs


def steering_hook(metrics: list[dict[str, Any]], n_layers: int) -> str:
    """The hook to steer: the highest held-out AUROC among the middle third of layers
    (ties to the layer nearest the middle of the network), where reasoning vectors steer
    best (Venhoff et al. 2025a); the early layers often separate cot from direct as well,
    but only by reading the instruction, and their directions are short. A cot-vs-direct
    contrast is perfectly separable at every layer (AUROC 1), so the tie rule decides:
    on SmolLM2-135M-Instruct the middle layer, 15, steers (docs/steering.md)."""
    import re

    def layer(m: dict[str, Any]) -> int:
        hit = re.match(r"blocks\.(\d+)\.", m["hook"])
        return int(hit.group(1)) if hit else -1

    mid = [m for m in metrics if n_layers // 3 <= layer(m) < max(2 * n_layers // 3, n_layers // 3 + 1)]
    pool = mid or metrics
    if not pool:
        raise _Skip("the direction has no sweep metrics to choose a layer from")
    best = max(pool, key=lambda m: (m["auroc"], -abs(2 * layer(m) - n_layers), -layer(m)))
    return str(best["hook"])


def stage_anchors(run: _Run) -> dict[str, Any]:
    from mechreason.anchors.analysis import AnchorsConfig, analyze, load_traces
    from mechreason.anchors.receivers import ReceiverConfig
    from mechreason.anchors.resampling import ResampleConfig

    cot = [r for r in run.records() if r["style"] == "cot"]
    cot_ids = {r["id"] for r in cot if r["n_sentences"] >= 2}
    if not cot_ids:
        most = max((r["n_sentences"] for r in cot), default=0)
        raise _Skip(f"thought anchors need a cot trace of 2 or more sentences; the longest has {most}")
    # Longest traces first: index 0 is analysed, the first few choose receiver heads.
    traces = sorted((t for t in load_traces(run.model, run.out / "traces" / A.TRACES_JSONL) if t.id in cot_ids),
                    key=lambda t: (-t.n, t.id))
    sz = run.sizes
    rcfg = ReceiverConfig(top_k=min(20, run.model.n_layers * run.model.n_heads // 4), seed=run.cfg.seed)
    # Vertical scores ignore the proximity_ignore nearest sentences: shorter traces have none.
    methods: tuple[str, ...] = ("resample", "suppression")
    note = ""
    if traces[0].n > rcfg.proximity_ignore + 1:
        methods = ("resample", "receivers", "suppression")
    else:
        note = (f"receiver heads not run: the longest trace has {traces[0].n} "
                                       f"sentences, vertical scores need more than {rcfg.proximity_ignore + 1}")
    cfg = AnchorsConfig(index=0, methods=methods, receiver_traces=sz.receiver_traces,
                        resample=ResampleConfig(rollouts=sz.rollouts, max_new_tokens=sz.rollout_tokens,
                                                seed=run.cfg.seed),
                        receivers=rcfg)
    s = analyze(run.model, traces, cfg, run.out / "anchors", progress=run.cfg.progress)
    # how many sentences' eps = 1e-9 KL sits at its ceiling (the report plots the graded,
    # Laplace-smoothed form first, with intervals)
    sat = (s.get("rollouts") or {}).get("saturated") or {}
    return {"anchors_trace": s.get("trace_id"), "anchors_sentences": s.get("n_sentences"),
            "anchors_kl_at_ceiling": sat.get("counterfactual_kl"), "_note": note}


def stage_report(run: _Run) -> dict[str, Any]:
    from mechreason.report.html import ReportConfig, build_report

    path, _ = build_report(ReportConfig(run_dir=run.out, title=f"mechreason demo: {run.cfg.model}"))
    return {"report": str(path)}


class _Skip(Exception):
    """A stage that cannot run here, with the reason (not an error of the run)."""


STAGES: dict[str, Callable[[_Run], dict[str, Any]]] = {
    "traces": stage_traces, "acts": stage_acts, "directions": stage_directions, "sae": stage_sae,
    "steering": stage_steering, "anchors": stage_anchors, "report": stage_report}
DONE_FILE = {"traces": "traces/traces.jsonl", "acts": "acts/cfg.json",
             "directions": "directions/cot_vs_direct/direction.json",
             "sae": "sae/features.json", "steering": "steering/summary.json", "anchors": "anchors/table.json"}


def _write_summary(run: _Run, summary: dict[str, Any]) -> None:
    summary["figures"] = run.figures
    write_json(run.out / A.SUMMARY_JSON, summary)


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run every stage (skipping those whose output exists); return summary.json's content.
    The model name, device and run directory are checked first: a bad one fails before
    any stage runs or any report is written."""
    from mechreason.outputs import check_out_dir, output_lock
    from mechreason.validate import check_device, check_model_name

    check_model_name(cfg.model)  # before any stage, and before anything is written
    check_device(cfg.device)
    check_out_dir(cfg.out)
    with output_lock(cfg.out):
        return _run_demo(cfg)


def _run_demo(cfg: DemoConfig) -> dict[str, Any]:
    run = _Run(cfg)
    run.out.mkdir(parents=True, exist_ok=True)
    old = read_json(run.out / A.SUMMARY_JSON) if (run.out / A.SUMMARY_JSON).is_file() else {}
    sizes = dataclasses.asdict(cfg.sizes)
    if (old.get("model") not in (None, cfg.model)
            or old.get("sizes") not in (None, {**sizes, "coefs": list(cfg.sizes.coefs)})):
        raise MechReasonError(f"{str(run.out)!r} holds a run of model {old.get('model')!r} "
                              f"(quick={old.get('quick')}, sizes {old.get('sizes')}); use another --out")
    run.figures = dict(old.get("figures") or {})
    summary: dict[str, Any] = {"model": cfg.model, "quick": cfg.quick, "seed": cfg.seed,
                               "sizes": sizes, "stages": {}}
    t_run = time.perf_counter()
    with bar("demo", len(STAGE_ORDER), unit="stage", enabled=cfg.progress) as stages:
        for name in STAGE_ORDER:
            stages.note(name)
            with bar(name, enabled=cfg.progress):
                summary["stages"][name] = rec = _run_stage(run, name, summary["stages"])
            stages.update()
            log.info("stage %s: %s %s", name, rec["status"], rec.get("reason", ""))
            summary["elapsed_s"] = time.perf_counter() - t_run
            _write_summary(run, summary)
    return summary


def _run_stage(run: _Run, name: str, done: dict[str, Any]) -> dict[str, Any]:
    if run.cfg.only and name not in run.cfg.only:
        marker = DONE_FILE.get(name)
        if marker and (run.out / marker).exists():
            return {"status": "resumed", "reason": f"not requested; output exists ({marker})"}
        return {"status": "skipped", "reason": "not requested (--only)"}
    if not available(name):
        return {"status": "not available", "reason": f"not available in this build ({MODULES[name]} is missing)"}
    blocked = [d for d in NEEDS[name] if done.get(d, {}).get("status") not in ("done", "resumed")]
    if blocked:
        return {"status": "skipped", "reason": f"needs stage(s) {', '.join(blocked)}, which did not run"}
    marker = DONE_FILE.get(name)
    if marker and (run.out / marker).exists() and name not in ("traces", "acts"):
        return {"status": "resumed", "reason": f"output exists ({marker}); skipped"}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        figs = STAGES[name](run)
        note = figs.pop("_note", "")
        run.figures |= figs
    except _Skip as e:
        return {"status": "skipped", "reason": str(e), "seconds": time.perf_counter() - t0}
    except Exception as e:  # one failing stage must not lose the others' results
        log.exception("demo stage %s failed", name)
        return {"status": "failed", "reason": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}
    return {"status": "done", "seconds": time.perf_counter() - t0,
            "cpu_seconds": time.process_time() - c0} | ({"note": note} if note else {})
