"""The model layer on both backends: hook points on unmodified HF modules (``hf``)
against TransformerLens's Bridge (``transformer-lens``), and canaries for the KV cache
that would have caught transformers 5.24 breaking the Bridge.

Every check runs on tiny random Llama and Gemma 3 models (seconds); hook values are
compared exactly (the hooks read the same tensors the model computes)."""

from __future__ import annotations

import functools

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.model import engine
from mechreason.model.engine import SamplingConfig
from mechreason.model.generation import generate
from mechreason.model.hooks import active_hook_count, hooks_context
from mechreason.model.loading import load_model
from mechreason.steering import Add, steer
from tests._hf import hf_generate

FAMILIES = {"llama": "tiny-random", "gemma": "tiny-random-gemma"}
PROMPTS = ["Tom has 3 apples. He buys 2 more.", "Hi.", "Count: 1, 2, 3, 4"]


@functools.cache
def _bridge_works() -> str | None:
    """Why the Bridge cannot run here (None if it can)."""
    try:
        load_model("tiny-random", device="cpu", backend="transformer-lens")
    except MechReasonError as e:
        return str(e)
    return None


@functools.cache
def _model(family: str, backend: str):
    if backend == "transformer-lens" and (why := _bridge_works()) is not None:
        pytest.skip(f"the Bridge refuses this transformers release: {why}")
    return load_model(FAMILIES[family], device="cpu", backend=backend)


BACKENDS = ["hf", "transformer-lens"]
CASES = [(f, b) for f in FAMILIES for b in BACKENDS]


def test_bridge_refusal_is_one_clear_line_on_transformers_5_24():
    import transformers
    from packaging.version import Version

    why = _bridge_works()
    if Version(transformers.__version__) >= Version("5.24"):
        assert why is not None and "ignores the KV cache" in why and "\n" not in why
    else:
        assert why is None


@pytest.mark.parametrize("family", FAMILIES)
def test_hf_backend_replaces_no_module(family):
    """The default backend leaves every module an HF class and registers nothing."""
    model = _model(family, "hf")
    fresh = load_model(FAMILIES[family], device="cpu", backend="hf")
    kinds = [type(m) for m in model.hf.modules()]
    assert kinds == [type(m) for m in fresh.hf.modules()]
    assert all(k.__module__.startswith(("transformers.", "torch.")) for k in kinds)
    assert active_hook_count(model) == 0


def _capture(model, names, ids):
    got = {}
    hooks = {n: functools.partial(lambda n, x: got.__setitem__(n, x.detach().clone()), n)
             for n in names}
    with hooks_context(model, hooks), torch.no_grad():
        logits = model.hf(ids).logits
    return got, logits


def _parity_names(model) -> list[str]:
    pts = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "attn.hook_pattern",
           "attn.hook_attn_scores", "attn.hook_z", "mlp.hook_post")
    names = [f"blocks.{L}.{p}" for L in range(model.n_layers) for p in pts]
    if model.hf.config.model_type == "llama":  # Gemma: see test_gemma_branch_outputs
        names += [f"blocks.{L}.hook_{p}_out" for L in range(model.n_layers) for p in ("attn", "mlp")]
    return [*names, "hook_embed", "ln_final.hook_out"]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_hook_name_agrees_across_backends(family):
    ours = _model(family, "hf")
    bridge = _model(family, "transformer-lens")
    names = _parity_names(ours)
    assert set(names) <= set(bridge.hook_names) and set(names) <= set(ours.hook_names)
    ids = torch.tensor([ours.encode(PROMPTS[0])])
    a, la = _capture(ours, names, ids)
    b, lb = _capture(bridge, names, ids)
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-6)
    for n in names:
        if "attn_scores" in n:  # masked entries: HF's mask uses the dtype min, the Bridge -inf
            keep = torch.ones_like(a[n], dtype=torch.bool).tril()
            torch.testing.assert_close(a[n][keep], b[n][keep], rtol=0, atol=1e-5, msg=n)
        else:
            torch.testing.assert_close(a[n], b[n].reshape(a[n].shape), rtol=0, atol=1e-6, msg=n)


def test_gemma_branch_outputs_are_what_the_residual_adds():
    """On Gemma, attn_out / mlp_out are the post-norm outputs (TransformerLens's own
    Gemma convention): resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out
    exactly; the Bridge's aliases are the pre-norm module outputs, so they differ."""
    model = _model("gemma", "hf")
    names = [f"blocks.2.{p}" for p in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post",
                                       "hook_attn_out", "hook_mlp_out")]
    got, _ = _capture(model, names, torch.tensor([model.encode(PROMPTS[0])]))
    pre, mid, post, attn, mlp = (got[n] for n in names)
    assert torch.equal(mid, pre + attn) and torch.equal(post, mid + mlp)


@pytest.mark.parametrize("name", ["tiny-random-gpt2", "tiny-random-gpt-neox", "tiny-random-gemma",
                                  "tiny-random"])
def test_every_family_reads_hidden_states_and_eager_patterns(name):
    model = load_model(name, device="cpu")
    ids = torch.tensor([model.encode(PROMPTS[0])])
    names = [f"blocks.{L}.{p}" for L in range(model.n_layers)
             for p in ("hook_resid_post", "attn.hook_pattern")]
    got, _ = _capture(model, names, ids)
    impl = model.hf.config._attn_implementation
    assert impl != "mechreason_eager"  # restored once the pattern hooks are gone
    model.hf.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            ref = model.hf(ids, output_hidden_states=True, output_attentions=True)
    finally:
        model.hf.config._attn_implementation = impl
    for L in range(model.n_layers - 1):  # HF applies the final norm to the last one
        assert torch.equal(got[f"blocks.{L}.hook_resid_post"], ref.hidden_states[L + 1])
    for L in range(model.n_layers):
        torch.testing.assert_close(got[f"blocks.{L}.attn.hook_pattern"], ref.attentions[L],
                                   rtol=0, atol=1e-6)


def test_resid_mid_replacement_changes_the_residual_itself():
    """Writing resid_mid must change what the MLP's residual add sees, not only the
    norm's input: with the MLP zeroed out, resid_post equals the written value."""
    model = load_model("tiny-random", device="cpu")
    ids = torch.tensor([model.encode(PROMPTS[1])])
    v = torch.randn(model.d_model)
    got, _ = _capture(model, ["blocks.1.hook_resid_mid"], ids)
    seen = {}
    hooks = {"blocks.1.hook_resid_mid": lambda x: x + v,
             "blocks.1.hook_mlp_out": lambda x: torch.zeros_like(x),
             "blocks.1.hook_resid_post": lambda x: seen.setdefault("post", x.clone())}
    with hooks_context(model, hooks), torch.no_grad():
        model.hf(ids)
    torch.testing.assert_close(seen["post"], got["blocks.1.hook_resid_mid"] + v, rtol=0, atol=1e-6)


def test_unsupported_family_names_the_supported_ones():
    from transformers import OPTConfig, OPTForCausalLM

    from mechreason.model.hookpoints import family_of

    hf = OPTForCausalLM(OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                  num_attention_heads=2, vocab_size=50))
    with pytest.raises(MechReasonError, match=r"'OPTForCausalLM'.*llama.*gemma2/3.*gpt2.*gpt-neox"):
        family_of(hf)


def test_unknown_backend():
    with pytest.raises(MechReasonError, match="did you mean 'transformer-lens'"):
        load_model("tiny-random", backend="transformer_lens")


# --- canaries: the KV cache through every backend -----------------------------------------

@pytest.mark.parametrize(("family", "backend"), CASES)
def test_canary_prefill_fills_the_cache(family, backend):
    model = _model(family, backend)
    ids = torch.tensor([model.encode(PROMPTS[0])])
    out = engine.forward(model.hf, ids)
    assert out.cache.get_seq_length() == ids.shape[1]


@pytest.mark.parametrize(("family", "backend"), CASES)
def test_canary_cached_logits_equal_uncached(family, backend):
    model = _model(family, backend)
    ids = torch.tensor([model.encode(PROMPTS[0])])
    full = engine.forward(model.hf, ids, use_cache=False).logits
    head = engine.forward(model.hf, ids[:, :-3])
    cache, steps = head.cache, []
    for t in range(ids.shape[1] - 3, ids.shape[1]):
        out = engine.forward(model.hf, ids[:, t:t + 1], cache=cache)
        cache = out.cache
        steps.append(out.logits[0, -1])
    torch.testing.assert_close(torch.stack(steps), full[0, -3:], rtol=0, atol=1e-5)


@pytest.mark.parametrize(("family", "backend"), CASES)
def test_canary_greedy_generation_matches_hf_with_and_without_cache(family, backend):
    model = _model(family, backend)
    prompts = [model.encode(p) for p in PROMPTS]
    ours = [g.ids for g in generate(model, prompts, SamplingConfig(max_new_tokens=12, batch_size=3))]
    eos = set(model.eos_ids)
    for use_cache in (True, False):
        ref = [[t for t in row if t not in eos] for row in
               (hf_generate(model, [p], max_new_tokens=12, use_cache=use_cache)[0] for p in prompts)]
        assert ours == ref


@pytest.mark.parametrize(("family", "backend"), CASES)
def test_canary_steered_generation_same_with_and_without_cache(family, backend):
    model = _model(family, backend)
    prompts = [model.encode(p) for p in PROMPTS]
    iv = Add(hook="blocks.1.hook_resid_post", vector=torch.randn(model.d_model,
             generator=torch.Generator().manual_seed(3)), alpha=4.0, positions="generated")
    with steer(model, iv):
        on = hf_generate(model, prompts, max_new_tokens=10, use_cache=True)
        off = hf_generate(model, prompts, max_new_tokens=10, use_cache=False)
        ours = [g.ids for g in generate(model, prompts, SamplingConfig(max_new_tokens=10))]
    plain = hf_generate(model, prompts, max_new_tokens=10)
    assert on == off and on != plain
    eos = set(model.eos_ids)
    assert ours == [[t for t in row if t not in eos] for row in on]


@pytest.mark.parametrize(("family", "backend"), CASES)
def test_canary_left_padded_batch_equals_rows_alone(family, backend):
    model = _model(family, backend)
    prompts = [model.encode(p) for p in PROMPTS]
    cfg = SamplingConfig(max_new_tokens=10, temperature=0.8, top_p=0.9, seed=5, batch_size=3)
    batch = generate(model, prompts, cfg)
    alone = [generate(model, [p], cfg, seeds=[cfg.seed + i])[0] for i, p in enumerate(prompts)]
    assert [g.ids for g in batch] == [g.ids for g in alone]


def test_steering_through_either_backend_gives_identical_tokens():
    prompts = [_model("llama", "hf").encode(p) for p in PROMPTS]
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    runs = []
    for backend in BACKENDS:
        model = _model("llama", backend)
        iv = Add(hook="blocks.2.hook_resid_post", vector=v, alpha=3.0, positions="first:2")
        with steer(model, iv):
            runs.append([g.ids for g in generate(model, prompts, SamplingConfig(max_new_tokens=10))])
    assert runs[0] == runs[1]


def test_steering_follows_rows_that_leave_the_batch():
    """The engine drops finished rows; the steering state (positions, sentence starts,
    counted applications) must follow the rows that remain."""
    model = load_model("tiny-random", device="cpu")
    prompts = [model.encode(p) for p in PROMPTS]
    iv = Add(hook="blocks.1.hook_resid_post", vector=torch.randn(
        model.d_model, generator=torch.Generator().manual_seed(5)), alpha=2.0,
        positions="sentence-starts")
    cfg = SamplingConfig(max_new_tokens=16, batch_size=3)
    with steer(model, iv):
        first = generate(model, prompts, cfg)
    stop_tok = first[1].ids[4]  # row 1 ends after 5 tokens, the others run on
    old = model.hf.generation_config.eos_token_id
    model.hf.generation_config.eos_token_id = stop_tok
    try:
        with steer(model, iv, count=True) as s:
            batch = generate(model, prompts, cfg)
        applied = s.applied(iv.hook)
        alone, alone_applied = [], {}
        for i, p in enumerate(prompts):
            with steer(model, iv, count=True) as s1:
                alone.append(generate(model, [p], cfg)[0])
            alone_applied[i] = s1.applied(iv.hook).get(0, [])
    finally:
        model.hf.generation_config.eos_token_id = old
    assert batch[1].finish_reason == "eos" and len(batch[1].ids) < len(batch[0].ids)
    assert [g.ids for g in batch] == [g.ids for g in alone]
    order = sorted(range(3), key=lambda i: -len(prompts[i]))  # generate's batch order
    assert {order[r]: applied.get(r, []) for r in range(3)} == alone_applied
