"""The engine backend: :mod:`mechreason.backends.base` served by mechreason's own
decode engine (:mod:`mechreason.model.engine`) on a loaded model, in this process. Hooks on
the model fire at every step, so this is the backend that steering, capture and the
white-box anchor methods run on.

Its tokens are :func:`mechreason.model.generation.generate`'s under the same seeds (the same
prefill, decode loop and sampler; a test holds them equal), with the EOS token kept and
each request's own length cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mechreason.backends.base import (
    Completion,
    FinishReason,
    GenerationBackend,
    Request,
    check_requests,
)
from mechreason.model import engine
from mechreason.model.generation import finish_rule

if TYPE_CHECKING:
    import torch

    from mechreason.model.engine import SamplingConfig
    from mechreason.model.loading import Model


class EngineBackend(GenerationBackend):
    """Generation on ``model`` with mechreason's engine (see the module docstring)."""

    name = "engine"
    hooks = True

    def __init__(self, model: Model):
        self.model = model

    def generate(self, requests: Sequence[Request], cfg: SamplingConfig, *,
                 logprobs: bool = False) -> list[Completion]:
        check_requests(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
        out: list[Completion | None] = [None] * len(requests)
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            for i, c in zip(idx, self._batch([requests[i] for i in idx], cfg, logprobs)):
                out[i] = c
        return [c for c in out if c is not None]

    def _batch(self, rows: list[Request], cfg: SamplingConfig, logprobs: bool) -> list[Completion]:
        model = self.model
        gens = engine.generators([r.seed for r in rows]) if cfg.temperature > 0 else []
        caps = [r.max_new_tokens or cfg.max_new_tokens for r in rows]
        reason: list[FinishReason] = ["length"] * len(rows)
        lps: list[list[float]] = [[] for _ in rows]

        def choose(logits: torch.Tensor, live: list[int], _tokens: list[list[int]]) -> list[int]:
            picks = engine.sample(logits, cfg, [gens[r] for r in live] if gens else [])
            if logprobs:  # of the model's own distribution (no temperature, no top-p)
                chosen = logits.log_softmax(-1).gather(-1, picks[:, None])[:, 0]
                for row, lp in zip(live, chosen.tolist()):
                    lps[row].append(float(lp))
            return [int(t) for t in picks.tolist()]

        done = finish_rule(model, cfg, caps, reason)
        out: list[list[int]] = [[] for _ in rows]
        prompts = [list(r.prompt_ids) for r in rows]
        for row, toks in engine.decode_loop(model, engine.prefill(model, prompts), choose, done):
            out[row] = list(toks)
        return [Completion(o, r, lps[i] if logprobs else None)
                for i, (o, r) in enumerate(zip(out, reason))]
