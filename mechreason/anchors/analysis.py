"""Thought anchors, the whole stage: run the chosen methods on one trace of a traces
file and write one artifact directory (Bogdan, Macar, Nanda, Conmy 2025).

Layout of ``out_dir``: ``cfg.json``, ``meta.json``; ``rollouts.jsonl`` and
``resampling.json`` (resample); ``receivers.json`` (receivers, heads chosen over the
file's traces); ``suppression.safetensors`` (suppression); ``table.json`` (the joined
per-sentence table and rank correlations); ``viewer/`` (thought-anchors.com JSON);
``view.html`` (the trace view of :mod:`mechreason.anchors.view`, one offline page).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mechreason.anchors.adaptive import AdaptiveConfig
from mechreason.anchors.export import viewer_json, write_viewer
from mechreason.anchors.join import rank_correlations, sentence_table
from mechreason.anchors.receivers import ReceiverConfig, analyze_receivers
from mechreason.anchors.resampling import ResampleConfig, resample
from mechreason.anchors.suppression import SuppressionConfig, suppression_matrix
from mechreason.anchors.trace import AnchorTrace, trace_from_ids
from mechreason.anchors.view import write_view
from mechreason.artifacts import (
    ANCHORS_TABLE_JSON,
    CFG_JSON,
    RECEIVERS_JSON,
    SUPPRESSION_FILE,
    save_tensors,
    write_json,
    write_meta,
)
from mechreason.errors import MechReasonError, unknown

log = logging.getLogger(__name__)
METHODS = ("resample", "receivers", "suppression")
CORR_COLUMNS = ("counterfactual_kl", "resampling_kl", "forced_importance_kl", "receiver_score",
                "suppression_out")


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnchorsConfig:
    """One thought-anchors analysis."""

    methods: tuple[str, ...] = METHODS
    """Which of resample, receivers, suppression to run."""
    index: int = 0
    """Which trace of the file to analyse."""
    receiver_traces: int | None = None
    """How many traces of the file choose receiver heads (None: all)."""
    resample: ResampleConfig = dataclasses.field(default_factory=ResampleConfig)
    adaptive: AdaptiveConfig | None = None
    """Adaptive resampling (stop a prefix once settled); None: every prefix gets
    ``resample.rollouts``."""
    receivers: ReceiverConfig = dataclasses.field(default_factory=ReceiverConfig)
    suppression: SuppressionConfig = dataclasses.field(default_factory=SuppressionConfig)

    def __post_init__(self) -> None:
        for m in self.methods:
            if m not in METHODS:
                raise unknown("anchors method", m, METHODS)
        if not self.methods:
            raise MechReasonError(f"choose at least one method of {', '.join(METHODS)}")
        if self.index < 0:
            raise MechReasonError(f"trace index must be >= 0, got {self.index}")


def load_traces(model, path: str | os.PathLike[str]) -> list[AnchorTrace]:
    """Traces of a JSONL file (``mechreason.traces.run`` records) as :class:`AnchorTrace`;
    records without sentence token spans are split here."""
    from mechreason.validate import check_same_model, check_token_ids

    recs = _read_records(path)
    out = []
    for k, rec in enumerate(recs):
        where = f"{path}: trace {rec.get('id', k)!r}"
        check_same_model(rec, model, where)
        check_token_ids([*rec.get("prompt_ids", []), *rec.get("generated_ids", [])],
                        model.d_vocab, where)
        if rec.get("sentences") and "tok_start" in rec["sentences"][0]:
            tr = AnchorTrace.from_record(rec)
        elif "generated_ids" in rec and "prompt_ids" in rec:
            tr = trace_from_ids(model, rec["prompt_ids"], rec["generated_ids"],
                                id=str(rec.get("id", k)), gold=rec.get("gold"))
        else:
            raise MechReasonError(f"{path}: record {k} lacks prompt_ids / generated_ids")
        out.append(_with_labels(tr))
    return out


def _read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    from mechreason.traces.run import read_traces

    recs = read_traces(path)
    if not recs:
        raise MechReasonError(f"traces file {str(path)!r} holds no traces")
    return recs


def _with_labels(tr: AnchorTrace) -> AnchorTrace:
    if any(tr.labels):
        return tr
    try:
        from mechreason.traces.labels import label_sentence
    except ImportError:
        return tr
    return dataclasses.replace(tr, labels=tuple(tuple(label_sentence(t, first=i == 0))
                                                for i, t in enumerate(tr.texts)))


def analyze(model, traces: list[AnchorTrace], cfg: AnchorsConfig, out_dir: str | os.PathLike[str],
            *, extract=None, grade=None, embedder=None, progress: bool = False,
            backend=None, runner=None) -> dict[str, Any]:
    """Run ``cfg.methods`` on ``traces[cfg.index]`` and write ``out_dir`` (see module).
    ``backend``: a generation backend for the resampling rollouts (e.g. vLLM); one
    without hooks is refused for receivers and suppression. ``runner`` runs the
    rollouts elsewhere (e.g. on Ray workers)."""
    from mechreason.backends.base import require_hooks
    from mechreason.outputs import check_out_dir, output_lock

    check_preconditions(traces, cfg)
    if backend is not None:
        for m in ("receivers", "suppression"):
            if m in cfg.methods:
                require_hooks(backend, f"method {m!r}")
    out = check_out_dir(out_dir)
    with output_lock(out):
        _check_fingerprint(model, traces, cfg, out)
        write_json(out / CFG_JSON, cfg)
        return _analyze(model, traces, cfg, out, extract=extract, grade=grade,
                        embedder=embedder, progress=progress, backend=backend, runner=runner)


def check_preconditions(traces: list[AnchorTrace], cfg: AnchorsConfig) -> None:
    """Every requested method's requirements, checked before any rollout: the trace
    exists, has sentences, and (receivers) has more than ``proximity_ignore + 1``
    sentences, or vertical scores have no query sentence to read."""
    if cfg.index >= len(traces):
        raise MechReasonError(f"trace index {cfg.index} out of range: the file has "
                              f"{len(traces)} traces (0..{len(traces) - 1})")
    trace = traces[cfg.index]
    if trace.n < 1:
        raise MechReasonError(f"trace {trace.id!r} has no sentences to attribute")
    need = cfg.receivers.proximity_ignore + 2
    if "receivers" in cfg.methods and trace.n < need:
        raise MechReasonError(
            f"method 'receivers' needs a trace of {need}+ sentences (vertical scores skip the "
            f"{cfg.receivers.proximity_ignore} nearest); trace {trace.id!r} has {trace.n}: "
            "pick a longer trace with --index or drop receivers from --methods")
    if "suppression" in cfg.methods and trace.n < 2:
        raise MechReasonError(f"method 'suppression' needs a trace of 2+ sentences; trace "
                              f"{trace.id!r} has {trace.n}")


def _check_fingerprint(model: Any, traces: list[AnchorTrace], cfg: AnchorsConfig,
                       out: Path) -> None:
    from mechreason.outputs import check_fingerprint, sha256_of

    trace = traces[cfg.index]
    fp = {"stage": "anchors", "weights_sha256": getattr(model, "weights_hash", None),
          "trace": {"id": trace.id, "sha256": sha256_of([trace.ids, trace.spans])},
          "resample": cfg.resample, "receivers": cfg.receivers, "suppression": cfg.suppression,
          "receiver_traces": cfg.receiver_traces}
    check_fingerprint(out, fp, what="thought-anchors analysis (rollouts)")


def _analyze(model, traces: list[AnchorTrace], cfg: AnchorsConfig, out: Path, *, extract,
             grade, embedder, progress: bool, backend=None, runner=None) -> dict[str, Any]:
    trace = traces[cfg.index]
    cols: dict[str, Any] = {}
    summary: dict[str, Any] = {"trace_id": trace.id, "n_sentences": trace.n}
    step = None
    if "resample" in cfg.methods:
        imp = resample(model, trace, cfg.resample, out, extract=extract, grade=grade,
                       embedder=embedder, progress=progress, adaptive=cfg.adaptive,
                       runner=runner, backend=backend)
        cols["importance"], step = imp, imp.matrix
        summary["rollouts"] = {"resample": sum(imp.n_rollouts),
                               "saturated": {k: sum(v) for k, v in imp.saturated.items()}}
    if "receivers" in cfg.methods:
        pool = traces[:cfg.receiver_traces] if cfg.receiver_traces else traces
        pool = pool if trace in pool else [*pool, trace]
        rec = analyze_receivers(model, pool, cfg.receivers)
        cols["receiver_scores"] = rec.scores[pool.index(trace)]
        summary["receivers"] = {"heads": rec.heads, "n_traces": len(pool),
                                "reliability": rec.reliability._asdict() if rec.reliability else None}
        write_json(out / RECEIVERS_JSON, summary["receivers"] | {"kurtosis": rec.kurtosis})
    if "suppression" in cfg.methods:
        sup = suppression_matrix(model, trace, cfg.suppression)
        cols["suppression"] = sup
        save_tensors(out / SUPPRESSION_FILE, sup._asdict())
        if step is None:
            step = np.nan_to_num(sup.matrix.numpy() - np.nanmin(sup.matrix.numpy()), nan=0.0)
    rows = sentence_table(trace, **cols)
    have = [c for c in CORR_COLUMNS if c in rows[0]]
    corr = [c._asdict() for c in rank_correlations(rows, have)] if len(have) > 1 else []
    write_json(out / ANCHORS_TABLE_JSON, {"rows": rows, "rank_correlations": corr})
    write_viewer(out / "viewer", *viewer_json(rows, step))
    write_meta(out, model, stage="anchors", methods=list(cfg.methods), trace_id=trace.id)
    summary["view"] = str(write_view(out))
    summary["rank_correlations"] = corr
    return summary
