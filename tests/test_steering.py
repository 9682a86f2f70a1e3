"""Steering engine invariants on the tiny random model (seconds each)."""

from __future__ import annotations

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.model.hooks import active_hook_count, hooks_context
from mechreason.steering import (
    Ablate,
    Add,
    AddLatent,
    Clamp,
    Positions,
    latent_activation,
    left_pad,
    steer,
)
from mechreason.traces.sentences import split_sentences
from tests._hf import hf_generate

HOOK = "blocks.1.hook_resid_post"
SPECS = ["all", "prompt", "generated", "first", "first:3", "window:4", "sentence-starts",
         "indices:0,-1,7"]


@pytest.fixture(scope="module")
def prompts(tiny):
    return [tiny.encode(t) for t in ("Hello there. How are", "Hi. x", "Count: 1, 2, 3")]


def _vec(d: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g) * scale


def _logits(model, prompts):
    ids, mask = left_pad(model, prompts)
    with torch.inference_mode():
        return model.hf(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("kind", ["add", "add_latent", "ablate"])
@pytest.mark.parametrize("hook", [HOOK, "blocks.0.hook_attn_out", "blocks.3.hook_mlp_out"])
def test_alpha_zero_is_bit_identical(tiny, prompts, kind, hook):
    v = _vec(tiny.d_model)
    sae = _sae(tiny.d_model, 11)
    iv = {"add": Add(hook=hook, vector=v, alpha=0.0),
          "add_latent": AddLatent(hook=hook, sae=sae, latent=3, alpha=0.0),
          "ablate": Ablate(hook=hook, directions=v, alpha=0.0)}[kind]
    base = _logits(tiny, prompts)
    with steer(tiny, iv, count=True) as s:
        steered = _logits(tiny, prompts)
    assert s.applications  # the update ran, it just added zero
    assert torch.equal(base, steered)


@pytest.mark.parametrize("spec", SPECS)
def test_cache_on_and_off_agree(tiny, prompts, spec):
    v = _vec(tiny.d_model, 1, 4.0)
    base = hf_generate(tiny, prompts, max_new_tokens=10)
    with steer(tiny, Add(hook=HOOK, vector=v, alpha=3.0, positions=spec)):
        on = hf_generate(tiny, prompts, max_new_tokens=10, use_cache=True)
        off = hf_generate(tiny, prompts, max_new_tokens=10, use_cache=False)
    assert on == off
    assert on != base  # the steering did something


@pytest.mark.parametrize("spec", SPECS)
def test_padded_batch_equals_rows_alone(tiny, prompts, spec):
    v = _vec(tiny.d_model, 2, 4.0)
    with steer(tiny, Add(hook=HOOK, vector=v, alpha=3.0, positions=spec)):
        batch = hf_generate(tiny, prompts, max_new_tokens=10)
        alone = [hf_generate(tiny, [p], max_new_tokens=10)[0] for p in prompts]
    assert batch == alone


@pytest.mark.parametrize("k", [1, 2, 5])
def test_first_k_touches_k_positions_per_row(tiny, prompts, k):
    hooks = [HOOK, "blocks.3.hook_resid_post"]
    ivs = [Add(hook=h, vector=_vec(tiny.d_model), positions=f"first:{k}") for h in hooks]
    with steer(tiny, ivs, count=True) as s:
        hf_generate(tiny, prompts, max_new_tokens=8, min_new_tokens=8)
    for h in hooks:
        got = s.applied(h)
        want = {b: list(range(len(p) - 1, len(p) - 1 + k)) for b, p in enumerate(prompts)}
        assert got == want


def _forced_decode(model, prompt: list[int], forced: list[int]) -> None:
    """Feed ``forced`` one token at a time through the KV cache (a decode loop)."""
    with torch.inference_mode():
        out = model.hf(input_ids=torch.tensor([prompt]), use_cache=True)
        past = out.past_key_values
        for tok in forced:
            past = model.hf(input_ids=torch.tensor([[tok]]), past_key_values=past,
                            use_cache=True).past_key_values


@pytest.mark.parametrize("text", [
    "First we add. Then we check! Is it right? Yes it is.",
    "Step one\n\nStep two follows.  Wait, what?   Hmm ok. 3.5 is a number. End",
    "  Leading space. x",
])
def test_sentence_starts_match_the_splitter(tiny, text):
    prompt = tiny.encode("Q: go")
    forced = tiny.encode(text, special=False)
    with steer(tiny, Add(hook=HOOK, vector=_vec(tiny.d_model), positions="sentence-starts"),
               count=True) as s:
        _forced_decode(tiny, prompt, forced)
    # the byte tokenizer has one token per character: chunk starts are token offsets
    want = [len(prompt) + c.start for c in split_sentences(text, min_chars=1)]
    assert s.applied(HOOK)[0] == want


@pytest.mark.parametrize("hook", [HOOK, "blocks.0.hook_resid_pre", "blocks.2.hook_attn_out",
                                  "blocks.2.hook_mlp_out", "blocks.3.hook_resid_mid"])
@pytest.mark.parametrize("spec", ["first", "prompt", "indices:1,-2", "window:2"])
def test_residual_changes_by_exactly_alpha_v(tiny, prompts, hook, spec):
    v, alpha = _vec(tiny.d_model, 3), 2.5
    ids, mask = left_pad(tiny, prompts)

    def capture():
        got = []
        with hooks_context(tiny, {hook: lambda x: got.append(x.clone())}), torch.inference_mode():
            tiny.hf(input_ids=ids, attention_mask=mask)
        return got[0]

    base = capture()
    with steer(tiny, Add(hook=hook, vector=v, alpha=alpha, positions=spec), count=True) as s:
        steered = capture()  # registered after the steering hook: sees its output
    chosen = torch.zeros(base.shape[:2], dtype=torch.bool)
    pad = ids.shape[1] - torch.tensor([len(p) for p in prompts])
    for b, positions in s.applied(hook).items():
        chosen[b, pad[b] + torch.tensor(positions)] = True
    want = _oracle_positions(Positions.parse(spec), [len(p) for p in prompts])
    assert s.applied(hook) == want
    assert torch.equal(steered[chosen], base[chosen] + alpha * v)
    assert torch.equal(steered[~chosen], base[~chosen])


def _oracle_positions(p: Positions, lens: list[int]) -> dict[int, list[int]]:
    out = {}
    for b, n in enumerate(lens):
        if p.kind == "first":
            pos = [n - 1]
        elif p.kind == "prompt":
            pos = list(range(n))
        elif p.kind == "window":
            pos = list(range(max(0, n - p.k), n))
        else:
            pos = sorted({i if i >= 0 else n + i for i in p.indices if -n <= i < n})
        out[b] = pos
    return out


def test_fused_update_equals_naive_per_intervention_hooks(tiny, prompts):
    d = tiny.d_model
    v1, v2, u = _vec(d, 4), _vec(d, 5), _vec(d, 6)
    ivs = [Add(hook=HOOK, vector=v1, alpha=1.5), Add(hook=HOOK, vector=v2, alpha=-2.0),
           Ablate(hook=HOOK, directions=u, alpha=1.0)]
    uh = u / u.norm()

    def naive(x):  # every term computed from the same input x
        return x + 1.5 * v1 - 2.0 * v2 - (x @ uh)[..., None] * uh

    with hooks_context(tiny, {HOOK: naive}):
        want = _logits(tiny, prompts)
    with steer(tiny, ivs):
        got = _logits(tiny, prompts)
    real = left_pad(tiny, prompts)[1].bool()  # padding is never steered
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)


def test_ablation_removes_the_projection(tiny, prompts):
    u = _vec(tiny.d_model, 7)
    got, plain = [], []
    with hooks_context(tiny, {HOOK: lambda x: plain.append(x.clone())}):
        _logits(tiny, prompts)
    with steer(tiny, Ablate(hook=HOOK, directions=torch.stack([u, _vec(64, 8)]))), \
            hooks_context(tiny, {HOOK: lambda x: got.append(x.clone())}):
        _logits(tiny, prompts)
    real = left_pad(tiny, prompts)[1].bool()
    assert (plain[0][real] @ (u / u.norm())).abs().min() > 1e-4  # there was something to remove
    assert (got[0][real] @ (u / u.norm())).abs().max() < 1e-5
    assert torch.equal(got[0][~real], plain[0][~real])  # padding is left alone


def test_set_alpha_needs_no_new_hooks(tiny, prompts):
    v = _vec(tiny.d_model, 9)
    with steer(tiny, Add(hook=HOOK, vector=v, alpha=1.0, name="v")):
        want = _logits(tiny, prompts)
    with steer(tiny, Add(hook=HOOK, vector=v, alpha=0.0, name="v")) as s:
        hooks_before = [dict(m._forward_hooks) for m in tiny.hf.modules()]
        s.set_alpha("v", 1.0)
        got = _logits(tiny, prompts)
        assert [dict(m._forward_hooks) for m in tiny.hf.modules()] == hooks_before
    assert torch.equal(got, want)


def test_one_hook_per_touched_hook_point(tiny):
    ivs = [Add(hook=f"blocks.{L}.hook_resid_post", vector=_vec(64, L), positions=p)
           for L in range(4) for p in ("first", "sentence-starts")]
    before = active_hook_count(tiny)
    with steer(tiny, ivs):
        assert _unique_hooks(tiny) == 4  # one per block, on the block module itself
        assert active_hook_count(tiny) == 5  # 4 fused hooks + the one position pre-hook
    assert active_hook_count(tiny) == before == 0


def _unique_hooks(model) -> int:
    """mechreason's forward hooks on the model (transformers adds its own, e.g. to record
    hidden states, which are not counted)."""
    from mechreason.model.hooks import _is_ours

    return sum(_is_ours(fn) for m in model.hf.modules() for fn in m._forward_hooks.values())


def test_hooks_are_removed_after_an_exception(tiny, prompts):
    before = active_hook_count(tiny)
    with pytest.raises(RuntimeError, match="boom"), \
            steer(tiny, Add(hook=HOOK, vector=_vec(64), positions="first")):
        assert _unique_hooks(tiny) == 1
        raise RuntimeError("boom")
    assert active_hook_count(tiny) == before == 0


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(hook=HOOK, vector=torch.zeros(63)), "d_model is 64"),
    (dict(hook=HOOK, vector=torch.full((64,), float("nan"))), "NaN"),
    (dict(hook="blocks.1.hook_resid_pots", vector=torch.zeros(64)), "did you mean"),
    (dict(hook="blocks.9.hook_resid_post", vector=torch.zeros(64)), "out of range"),
    (dict(hook="blocks.1.attn.hook_pattern", vector=torch.zeros(64)), "steerable points"),
    (dict(hook=HOOK, vector=torch.zeros(64), positions="frist"), "unknown positions"),
    (dict(hook=HOOK, vector=torch.zeros(64), positions="window"), "window:N"),
])
def test_bad_input_is_rejected_before_any_hook(tiny, kwargs, match):
    before = active_hook_count(tiny)
    with pytest.raises(MechReasonError, match=match):
        steer(tiny, Add(**kwargs)).__enter__()
    assert active_hook_count(tiny) == before


def _sae(d: int, seed: int, n: int = 32):
    """A SAELens JumpReLU SAE with random weights (a real component, not a mock)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    torch.manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=n))
    with torch.no_grad():
        for p in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec):
            p.normal_(0, 0.3)
        sae.b_dec.zero_()
        sae.threshold.uniform_(0, 0.05)
    return sae


def _our_sae(d: int, seed: int, n: int = 24):
    """mechreason's own JumpReLU SAE with random weights and a non-unit input scale."""
    from mechreason.sae.model import SAEConfig, SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=n, arch="jumprelu", hook=HOOK), seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.05)
        sae.b_dec.normal_(0, 0.05)
        sae.threshold.uniform_(0, 0.05)
        sae.norm_scale.fill_(1.7)
    return sae


@pytest.mark.parametrize("which", ["sae_lens", "ours"])
@pytest.mark.parametrize("value", [0.0, 3.0])
def test_clamp_is_a_decoder_delta_from_the_sae_encoder(tiny, prompts, which, value):
    sae = _sae(tiny.d_model, 12) if which == "sae_lens" else _our_sae(tiny.d_model, 12)
    ids, mask = left_pad(tiny, prompts)

    def capture():
        got = []
        with hooks_context(tiny, {HOOK: lambda x: got.append(x.clone())}), torch.inference_mode():
            tiny.hf(input_ids=ids, attention_mask=mask)
        return got[0]

    base = capture()
    real = mask.bool()
    with torch.no_grad():  # a latent that is on at some tokens and off at others
        acts = sae.encode(base)[real]
        j = int(((acts > 0).any(0) & (acts == 0).any(0)).nonzero()[0])
    with steer(tiny, Clamp(hook=HOOK, sae=sae, latent=j, alpha=value, positions="prompt")):
        steered = capture()
    with torch.no_grad():
        a = sae.encode(base)[..., j]  # the SAE's own encoder is the oracle
        scale = float(getattr(sae, "norm_scale", 1.0))
        want = base + (value - a)[..., None] * sae.W_dec[j] / scale
        torch.testing.assert_close(latent_activation(sae, base, j), a)
    torch.testing.assert_close(steered[real], want[real], rtol=1e-5, atol=1e-5)
    assert torch.equal(steered[~real], base[~real])
