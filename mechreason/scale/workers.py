"""Scale: what one worker holds and does (DESIGN section 10).

A worker holds one model and runs any job on it (traces or rollouts), so one pool
serves a whole session.

:func:`make_generator` is the one place a worker builds its generation backend: our
engine on the model it loads (``ModelSpec.backend == "engine"``), or a vLLM engine of its
own beside it (``"vllm"``: started in vLLM's environment, behind a pipe, for the
worker's lifetime; when the worker dies the pipe closes and vLLM exits with it). The
work functions read only what it returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from mechreason.errors import unknown
from mechreason.scale.shards import Shard

if TYPE_CHECKING:
    from mechreason.backends.base import GenerationBackend
    from mechreason.model.loading import Model

WORKER_BACKENDS = ("engine", "vllm")


class ModelSpec(NamedTuple):
    """How a worker loads its model (sent to the worker, loaded there)."""

    name: str
    device: str | None = "cpu"
    dtype: str = "float32"
    backend: str = "engine"
    """``engine`` (mechreason's, on the worker's model) or ``vllm`` (a vLLM engine per
    worker, in vLLM's own environment)."""


class Generator(NamedTuple):
    """What a worker holds: its model (tokenizer, grading, our engine) and, with
    ``backend="vllm"``, its running vLLM backend."""

    model: Model
    backend: GenerationBackend | None = None


def make_generator(spec: ModelSpec) -> Generator:
    """A worker's generation backend."""
    from mechreason.model.loading import load_model

    if spec.backend not in WORKER_BACKENDS:
        raise unknown("worker backend", spec.backend, WORKER_BACKENDS)
    model = load_model(spec.name, device=spec.device, dtype=spec.dtype)
    if spec.backend == "engine":
        return Generator(model)
    from mechreason.backends.vllm_backend import VLLMBackend

    return Generator(model, VLLMBackend(model, dtype=spec.dtype))  # started; lives with the worker


def trace_work(gen: Generator, shard: Shard) -> list[dict[str, Any]]:
    """The records of a shard of problems (context: style, sampling, keep_tail, labeller)."""
    from mechreason.model.generation import iter_generate, iter_generate_via
    from mechreason.traces.labels import get_labeller
    from mechreason.traces.run import iter_records

    style, sampling, keep_tail, labeller = shard.context
    fn = iter_generate if gen.backend is None else iter_generate_via(gen.backend)
    return list(iter_records(gen.model, list(shard.items), style=style, sampling=sampling,
                             labeller=get_labeller(labeller, gen.model), keep_tail=keep_tail,
                             generate_fn=fn))


def rollout_work(gen: Generator, shard: Shard) -> list[dict[str, Any]]:
    """The graded records of a shard of rollout jobs (context: trace, config, extract, grade)."""
    from mechreason.anchors.resampling import rollout_records

    trace, cfg, extract, grade = shard.context
    return list(rollout_records(gen.model, trace, cfg, list(shard.items), extract=extract,
                                grade=grade, backend=gen.backend))


def model_info(gen: Generator) -> tuple[str, str | None]:
    """A worker model's name and weights hash (the resume check reads them)."""
    return gen.model.name, gen.model.weights_hash
