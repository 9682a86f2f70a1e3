"""Shared fixtures: one tiny random model per session, built from a config (no download)."""

from __future__ import annotations

import pytest
import torch

# The tiny model's matrices are far too small to gain from intra-op threads, and on a
# shared 2-core machine the threads fight: one thread makes the suite several times faster.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny():
    """A seeded random 4-layer Llama (d_model 64) with a byte-level tokenizer."""
    from mechreason.model.loading import load_model

    return load_model("tiny-random", device="cpu")


@pytest.fixture(scope="session")
def smollm():
    """The real default model (slow tests only)."""
    from mechreason.model.loading import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(autouse=True)
def _no_hooks_left(request):
    """Every test that used the shared tiny model must leave no hook on it."""
    yield
    if "tiny" in request.fixturenames:
        from mechreason.model.hooks import active_hook_count

        model = request.getfixturevalue("tiny")
        left = active_hook_count(model)
        where = sorted({f"{n or 'model'}: {type(m).__name__}" for n, m in model.hf.named_modules()
                        if m._forward_hooks or m._forward_pre_hooks})
        assert left == 0, f"{request.node.nodeid} left {left} hook(s) on the tiny model: {where}"
