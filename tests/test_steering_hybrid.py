"""The hybrid base+thinking loop (Venhoff et al. 2025b) on tiny random models."""

from __future__ import annotations

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.methods.hybrid import HybridConfig, hybrid_generate
from mechreason.model.hooks import hooks_context
from tests._hf import hf_generate

HOOK = "blocks.2.hook_resid_post"
CFG = HybridConfig(hook=HOOK, select_hook=HOOK, alpha=6.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def other():
    from mechreason.model.loading import load_model

    return load_model("tiny-random", device="cpu", seed=1)


def _vectors(d: int) -> torch.Tensor:
    return torch.randn(3, d, generator=torch.Generator().manual_seed(0))


def test_same_model_steers_nothing(tiny):
    prompt = tiny.encode("Solve: 2+2")
    res = hybrid_generate(tiny, tiny, prompt, _vectors(tiny.d_model), CFG)
    assert res.frac_steered == 0.0 and not any(res.steered)
    assert res.ids == hf_generate(tiny, [prompt], max_new_tokens=12)[0]


def test_different_models_steer_exactly_where_they_disagree(tiny, other):
    prompt = tiny.encode("Solve: 2+2")
    vecs = _vectors(tiny.d_model)
    res = hybrid_generate(tiny, other, prompt, vecs, CFG)
    assert 0 < res.frac_steered <= 1
    seq = list(prompt)
    for i, tok in enumerate(res.ids):  # oracle: full forwards without a cache
        k = res.behaviours[i]
        add = (lambda x: x) if k is None else _add_last(CFG.alpha * vecs[k])
        with hooks_context(tiny, {HOOK: add}), torch.inference_mode():
            want = int(tiny.hf(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
        with torch.inference_mode():
            base = int(tiny.hf(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            think = int(other.hf(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
        assert tok == want
        assert res.steered[i] == (base != think)
        seq.append(tok)


def _add_last(v):
    def fn(x):
        x = x.clone()
        x[:, -1] += v
        return x
    return fn


def test_vectors_must_fit_the_base_model(tiny):
    with pytest.raises(MechReasonError, match="n_behaviours, 64"):
        hybrid_generate(tiny, tiny, [5, 6], torch.zeros(3, 10), CFG)
