"""Thought anchors (Bogdan, Macar, Nanda, Conmy 2025): which sentences of a reasoning
trace matter, by black-box resampling, receiver heads and attention suppression, as a
library over a local model.

Modules, in pipeline order: ``trace`` (sentence token spans), ``rollouts`` (the
prefix-cached batched sampler), ``resampling`` + ``importance`` (black box),
``receivers`` (white box), ``suppression`` (causal), ``join`` (one table, rank
correlations), ``export`` (thought-anchors.com viewer JSON), ``view`` (the offline trace view
page), ``analysis`` (all of it
on one trace of a traces file).
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "AnchorTrace": "mechreason.anchors.trace",
    "trace_from_ids": "mechreason.anchors.trace",
    "Job": "mechreason.anchors.rollouts",
    "batched_rollouts": "mechreason.anchors.rollouts",
    "naive_rollouts": "mechreason.anchors.rollouts",
    "ResampleConfig": "mechreason.anchors.resampling",
    "resample": "mechreason.anchors.resampling",
    "Importance": "mechreason.anchors.importance",
    "compute_importance": "mechreason.anchors.importance",
    "kl_divergence": "mechreason.anchors.importance",
    "ReceiverConfig": "mechreason.anchors.receivers",
    "analyze_receivers": "mechreason.anchors.receivers",
    "SuppressionConfig": "mechreason.anchors.suppression",
    "suppression_matrix": "mechreason.anchors.suppression",
    "suppression_reference": "mechreason.anchors.suppression",
    "sentence_table": "mechreason.anchors.join",
    "rank_correlations": "mechreason.anchors.join",
    "viewer_json": "mechreason.anchors.export",
    "write_viewer": "mechreason.anchors.export",
    "read_viewer": "mechreason.anchors.export",
    "view_data": "mechreason.anchors.view",
    "render_view": "mechreason.anchors.view",
    "write_view": "mechreason.anchors.view",
    "AnchorsConfig": "mechreason.anchors.analysis",
    "analyze": "mechreason.anchors.analysis",
    "MiniLMEmbedder": "mechreason.anchors.embed",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
