"""Reasoning directions: contrast sets, difference-of-means methods, layer sweeps, reading
and export (stages 1-5: contrast, methods, sweep, read, io; pipeline ties them together).

Exports load lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "ContrastSpec": "contrast", "ContrastSet": "contrast", "build_contrast": "contrast",
    "AGGREGATIONS": "contrast",
    "Group": "methods", "METHODS": "methods", "get_method": "methods", "mean_diff": "methods",
    "unit_mean_diff": "methods", "label_vs_all": "methods", "pca_paired": "methods",
    "logistic": "methods",
    "layer_sweep": "sweep", "split_by_problem": "sweep", "SweepResult": "sweep",
    "format_table": "sweep",
    "logit_lens": "read", "cosine_matrix": "read", "sentence_projections": "read",
    "project_trace": "read",
    "DirectionSet": "io", "save_direction": "io", "load_direction": "io", "direction_vector": "io",
    "export_gguf": "io", "import_gguf": "io", "ControlVector": "io",
    "DirectionsConfig": "config", "compute_directions": "pipeline", "save_result": "pipeline",
    "export_result": "pipeline",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
