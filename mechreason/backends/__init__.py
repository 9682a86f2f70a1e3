"""Generation backends: the black-box interface (:mod:`mechreason.backends.base`) and
its implementations, our engine and vLLM."""

from mechreason.backends.base import (
    BACKENDS,
    Completion,
    GenerationBackend,
    HooksUnavailable,
    Request,
    require_hooks,
)

__all__ = ["BACKENDS", "Completion", "GenerationBackend", "HooksUnavailable", "Request",
           "require_hooks"]
