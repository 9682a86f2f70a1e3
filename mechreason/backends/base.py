"""The generation backend interface: the one narrow door black-box work goes through
(DESIGN.md section 10).

Prompt token ids and sampling settings in; token ids, finish reasons and, where asked,
per-token log-probabilities out. Nothing else crosses it (no text, no tensors, no
hooks), so an engine in another process or environment can serve it. Two backends
implement it:

- ``engine`` (:class:`mechreason.backends.engine.EngineBackend`): mechreason's own
  decode engine on a loaded :class:`~mechreason.model.loading.Model`; hooks on the model fire
  at every step, so it is the one that steering, capture, receivers and suppression use.
- ``vllm`` (:class:`mechreason.backends.vllm_backend.VLLMBackend`): a vLLM worker in its
  own environment, token ids over a pipe; no hooks (asking for them is a
  :class:`HooksUnavailable` error).

Reproducibility: every request carries its own seed, so a request's tokens do not
depend on which other requests share a call (on the same backend and versions).
Different backends draw different random numbers: they agree token for token only
under greedy decoding, and in distribution when sampling.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    from types import TracebackType

    from mechreason.model.engine import SamplingConfig

FinishReason = Literal["eos", "stop", "length"]
BACKENDS = ("engine", "vllm")
"""Generation backend names (the CLI's ``--backend vllm`` picks the second)."""


class Request(NamedTuple):
    """One prompt to continue."""

    prompt_ids: tuple[int, ...]
    """Prompt token ids (special tokens already in place; no BOS is added)."""
    seed: int
    """This request's own seed (>= 0, < 2**63): its sample depends on nothing else."""
    max_new_tokens: int | None = None
    """Overrides :attr:`SamplingConfig.max_new_tokens` for this request."""


class Completion(NamedTuple):
    """One generated continuation."""

    ids: list[int]
    """Generated token ids. The EOS token that ended it (``finish_reason == "eos"``) is
    the last one, included, so ``len(ids)`` is the number of tokens decoded."""
    finish_reason: FinishReason
    """``eos``, ``stop`` (a stop string of :attr:`SamplingConfig.stop`) or ``length``."""
    logprobs: list[float] | None = None
    """With ``logprobs=True``: the log-probability of each token of ``ids`` under the
    model's own next-token distribution (log-softmax of the logits: no temperature, no
    top-p), as vLLM's default ``raw_logprobs`` reports it."""


class HooksUnavailable(MechReasonError):
    """Work that needs hooks on the model was asked of a backend that has none."""


class GenerationBackend(abc.ABC):
    """Generation of token ids from token ids (see the module docstring). Use as a
    context manager or call :meth:`close`; both are idempotent."""

    name: str = ""
    """The backend's name, one of :data:`BACKENDS`."""
    hooks: bool = False
    """True when hooks registered on the model fire during :meth:`generate`."""
    chunk: int | None = None
    """Requests per :meth:`generate` call that keep the backend busy (callers that save
    as they go split their work in calls of this size); None: ``cfg.batch_size``."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[Request], cfg: SamplingConfig, *,
                 logprobs: bool = False) -> list[Completion]:
        """Continue every request, in input order. ``cfg`` gives temperature, top-p,
        the length cap, stop strings and the batch size; ``cfg.seed`` is unused (each
        request has its own seed)."""

    def close(self) -> None:  # noqa: B027 (optional: a backend may hold nothing)
        """Release what the backend holds (a worker process, memory)."""

    def __enter__(self) -> GenerationBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def require_hooks(backend: GenerationBackend | str, what: str) -> None:
    """Refuse ``what`` (e.g. ``"steering"``) on a backend that cannot carry hooks."""
    name = backend if isinstance(backend, str) else backend.name
    hooks = name == "engine" if isinstance(backend, str) else backend.hooks
    if not hooks:
        raise HooksUnavailable(
            f"{what} needs hooks on the model, which the {name!r} backend cannot carry; "
            "run it without --backend vllm (on mechreason's own engine)")


def check_requests(requests: Sequence[Request]) -> None:
    """Refuse empty prompts and out-of-range seeds with one line."""
    for i, r in enumerate(requests):
        if not r.prompt_ids:
            raise MechReasonError(f"request {i} has an empty prompt; every prompt needs a token")
        if not 0 <= r.seed < 2**63:
            raise MechReasonError(f"request {i} has seed {r.seed}; seeds must be in [0, 2**63)")
        if r.max_new_tokens is not None and r.max_new_tokens < 1:
            raise MechReasonError(f"request {i} has max_new_tokens {r.max_new_tokens}; must be >= 1")
