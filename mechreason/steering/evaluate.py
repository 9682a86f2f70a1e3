"""Steering evaluation: what a steering run did to behaviour, with intervals and an
equal-norm random control in every experiment (DESIGN sections 5 and 8).

Per arm: accuracy (Wilson interval), answer-parse rate, generated length (mean with a
normal interval), the share of responses that reason in steps, sentence-label and
behaviour fractions and backtracking (from :func:`mechreason.traces.run.summarize`), and
the KL of next-token distributions against the unsteered model on fixed texts
(Hojer et al. 2025). :func:`first_token_contrast` computes the He et al. (2026)
cot-minus-direct direction at the position that emits the first generated token, and
:func:`contrast_latents` ranks SAE latents the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxtyping import Float

from mechreason.errors import MechReasonError
from mechreason.model.engine import left_pad
from mechreason.model.hooks import hooks_context
from mechreason.stats import mean_ci
from mechreason.steering.engine import steer
from mechreason.steering.interventions import Intervention, latent_activation

if TYPE_CHECKING:
    import torch

    from mechreason.model.generation import SamplingConfig
    from mechreason.model.loading import Model
    from mechreason.traces.tasks import Problem

_CALC = re.compile(r"\d[\d,.]*\s*(?:[-+*/×x÷]|times|plus|minus)\s*\$?\d|=\s*\$?\d")


def reasons_in_steps(text: str) -> bool:
    """A response reasons in steps when an intermediate computation (``a op b`` or
    ``= n``) appears before its last sentence and it has at least two sentences."""
    from mechreason.traces.sentences import split_sentences

    chunks = split_sentences(text)
    if len(chunks) < 2:
        return False
    return bool(_CALC.search(text[:chunks[-1].start]))


def summarize_arm(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One arm's behaviour metrics (see the module docstring)."""
    from mechreason.traces.run import summarize, wilson

    if not records:
        raise MechReasonError("no records to summarise")
    row = summarize(records, by=())[0]
    n = len(records)
    steps = sum(reasons_in_steps(r["generated_text"]) for r in records)
    length = mean_ci([float(r["n_generated_tokens"]) for r in records])
    row.update(steps_share=steps / n, steps_ci=wilson(steps, n),
               length_mean=length[0], length_ci=(length[1], length[2]),
               accuracy_ci=(row.pop("ci_low"), row.pop("ci_high")))
    return row


def random_like(v: Float[torch.Tensor, " d"], seed: int) -> Float[torch.Tensor, " d"]:
    """A random direction with the same norm as ``v`` (the control)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    r = torch.randn(v.shape, generator=g, dtype=torch.float32)
    return (r / r.norm() * v.float().norm()).to(v.dtype)


def random_latent(n_latents: int, exclude: int, seed: int) -> int:
    """A random latent index other than ``exclude`` (the latent control)."""
    import random

    rng = random.Random(seed)
    while (j := rng.randrange(n_latents)) == exclude:
        pass
    return j


def last_prompt_acts(model: Model, prompts: Sequence[Sequence[int]], hook: str,
                     batch_size: int = 16) -> Float[torch.Tensor, "n d_model"]:
    """(n, d) activations at each prompt's last token: the position that emits the
    first generated token."""
    import torch

    model.check_hook(hook)
    out = []
    for s in range(0, len(prompts), batch_size):
        ids, mask = left_pad(model, prompts[s:s + batch_size])
        got: list[torch.Tensor] = []

        def keep(x: torch.Tensor, got: list[torch.Tensor] = got) -> None:
            got.append(x[:, -1].detach().float().cpu())

        with hooks_context(model, {hook: keep}), torch.inference_mode():
            model.hf(input_ids=ids, attention_mask=mask, use_cache=False)
        out.append(got[0])
    return torch.cat(out)


def _style_prompts(model: Model, problems: Sequence[Problem], style: str) -> list[list[int]]:
    from mechreason.traces.prompts import render_prompt

    return [model.encode(render_prompt(model, p, style)) for p in problems]


def first_token_contrast(model: Model, problems: Sequence[Problem], hook: str, *,
                         a: str = "cot", b: str = "direct") -> Float[torch.Tensor, " d_model"]:
    """Mean activation at the first-token position under style ``a`` minus ``b``."""
    xa = last_prompt_acts(model, _style_prompts(model, problems, a), hook)
    xb = last_prompt_acts(model, _style_prompts(model, problems, b), hook)
    return xa.mean(0) - xb.mean(0)


def contrast_latents(model: Model, sae: Any, problems: Sequence[Problem], hook: str, *,
                     a: str = "cot", b: str = "direct", top: int = 10) -> list[tuple[int, float]]:
    """SAE latents ranked by mean activation at the first-token position under style
    ``a`` minus ``b`` (He et al. 2026), one unit per prompt, through
    :func:`mechreason.sae.features.latent_contrast`: ``[(latent, score), ...]``, best first."""
    import torch

    from mechreason.sae.features import latent_contrast

    xa = last_prompt_acts(model, _style_prompts(model, problems, a), hook)
    xb = last_prompt_acts(model, _style_prompts(model, problems, b), hook)
    with torch.no_grad():
        res = latent_contrast(sae.encode(xa.to(sae.W_enc.device, sae.W_enc.dtype)).cpu(),
                              sae.encode(xb.to(sae.W_enc.device, sae.W_enc.dtype)).cpu())
    return [(j, float(res.diff[j])) for j in res.order(top)]


def kl_vs_unsteered(model: Model, interventions: Sequence[Intervention],
                    texts: Sequence[tuple[Sequence[int], Sequence[int]]]) -> tuple[float, float, float]:
    """Mean KL(unsteered || steered) of next-token distributions over the positions
    that emit the continuation of each fixed ``(prompt_ids, continuation_ids)`` pair,
    with the interventions' own positions (the prompt is the prompt). Returns the
    mean over texts and its interval."""
    import torch

    if not texts:
        raise MechReasonError("kl_vs_unsteered needs at least one text")
    per_text = []
    for prompt, cont in texts:
        ids = torch.tensor([list(prompt) + list(cont)], device=model.device)
        p0 = len(prompt) - 1
        with torch.inference_mode():
            base = model.hf(input_ids=ids, use_cache=False).logits[0, p0:-1].float()
            with steer(model, interventions, prompt_lens=[len(prompt)]):
                new = model.hf(input_ids=ids, use_cache=False).logits[0, p0:-1].float()
        lp, lq = base.log_softmax(-1), new.log_softmax(-1)
        per_text.append(float((lp.exp() * (lp - lq)).sum(-1).mean()))
    return mean_ci(per_text)


def run_arm(model: Model, problems: Sequence[Problem], out: str | Path, *, style: str,
            sampling: SamplingConfig, interventions: Sequence[Intervention] | None = None,
            progress: bool = False) -> list[dict[str, Any]]:
    """Generate, grade and label traces for ``problems`` (the traces format), steered
    by ``interventions`` when given. Resumes: records already in ``out`` are kept."""
    from mechreason.traces.run import run_traces

    if not interventions:
        return run_traces(model, problems, out, style=style, sampling=sampling,
                          progress=progress)
    with steer(model, interventions):
        return run_traces(model, problems, out, style=style, sampling=sampling,
                          progress=progress)


def latent_activation_at_first(model: Model, sae: Any, prompts: Sequence[Sequence[int]],
                               hook: str, latent: int) -> torch.Tensor:
    """A latent's activation at each prompt's first-token position (for scaling)."""
    x = last_prompt_acts(model, prompts, hook)
    return latent_activation(sae, x.to(sae.W_enc.dtype), latent)
