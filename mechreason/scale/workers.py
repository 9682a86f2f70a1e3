"""Scale: what one worker holds and does (DESIGN section 10).

A worker holds one model and runs any job on it (traces or rollouts), so one pool
serves a whole session.

:func:`make_generator` is the one place a worker builds its generation backend (today
our engine through :func:`mechreason.model.loading.load_model`); the work functions read only
what it returns, so another backend is a change here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from mechreason.scale.shards import Shard

if TYPE_CHECKING:
    from mechreason.model.loading import Model


class ModelSpec(NamedTuple):
    """How a worker loads its model (sent to the worker, loaded there)."""

    name: str
    device: str | None = "cpu"
    dtype: str = "float32"


def make_generator(spec: ModelSpec) -> Model:
    """A worker's generation backend."""
    from mechreason.model.loading import load_model

    return load_model(spec.name, device=spec.device, dtype=spec.dtype)


def trace_work(model: Model, shard: Shard) -> list[dict[str, Any]]:
    """The records of a shard of problems (context: style, sampling, keep_tail, labeller)."""
    from mechreason.traces.labels import get_labeller
    from mechreason.traces.run import iter_records

    style, sampling, keep_tail, labeller = shard.context
    return list(iter_records(model, list(shard.items), style=style, sampling=sampling,
                             labeller=get_labeller(labeller, model), keep_tail=keep_tail))


def rollout_work(model: Model, shard: Shard) -> list[dict[str, Any]]:
    """The graded records of a shard of rollout jobs (context: trace, config, extract, grade)."""
    from mechreason.anchors.resampling import rollout_records

    trace, cfg, extract, grade = shard.context
    return list(rollout_records(model, trace, cfg, list(shard.items), extract=extract,
                                grade=grade))


def model_info(model: Model) -> tuple[str, str | None]:
    """A worker model's name and weights hash (the resume check reads them)."""
    return model.name, model.weights_hash
