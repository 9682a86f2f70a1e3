"""Sparse autoencoders: train on captured activations, save/load in the SAELens format,
evaluate, rank reasoning features, and discover behaviours by clustering sentences.

Modules: :mod:`~mechreason.sae.model` (TopK / ReLU / JumpReLU SAE),
:mod:`~mechreason.sae.train` (streaming, resumable training),
:mod:`~mechreason.sae.io` (SAELens folders), :mod:`~mechreason.sae.evaluate`,
:mod:`~mechreason.sae.features`, :mod:`~mechreason.sae.behaviours`.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "SAEConfig": "mechreason.sae.model",
    "SparseAutoencoder": "mechreason.sae.model",
    "SAEOutput": "mechreason.sae.model",
    "TrainConfig": "mechreason.sae.config",
    "train_from_stores": "mechreason.sae.pipeline",
    "train_sae": "mechreason.sae.train",
    "store_source": "mechreason.sae.train",
    "tensor_source": "mechreason.sae.train",
    "save_sae": "mechreason.sae.io",
    "load_sae": "mechreason.sae.io",
    "check_sae_fits": "mechreason.sae.io",
    "reconstruction_metrics": "mechreason.sae.evaluate",
    "loss_recovered": "mechreason.sae.evaluate",
    "contrast_scores": "mechreason.sae.features",
    "reason_scores": "mechreason.sae.features",
    "top_activations": "mechreason.sae.features",
    "logit_lens": "mechreason.sae.features",
    "BehaviourConfig": "mechreason.sae.behaviours",
    "discover_behaviours": "mechreason.sae.behaviours",
}

__all__ = list(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
