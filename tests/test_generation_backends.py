"""The generation backend interface on our engine (no vLLM needed): EngineBackend
equals ``generation.generate``; its log-probabilities equal a full forward's; rollouts
and traces through a backend equal the engine's own paths; the vLLM model directory
holds what vLLM needs; ``--backend vllm`` is refused where hooks are needed."""

from __future__ import annotations

import json

import pytest
import torch
from _anchors_fixtures import make_trace

from mechreason.anchors.rollouts import Job, backend_rollouts, batched_rollouts, rollout_seed
from mechreason.backends import HooksUnavailable, Request, require_hooks
from mechreason.backends.engine import EngineBackend
from mechreason.cli import main
from mechreason.errors import MechReasonError
from mechreason.model.engine import SamplingConfig
from mechreason.model.generation import generate, iter_generate_via

PROMPTS = ["Hi", "What is 2+3?", "Count: 1 2 3 4", "x", "A much longer prompt, with commas."]


def _prompts(tiny):
    return [tiny.encode(p) for p in PROMPTS]


@pytest.mark.parametrize(("temperature", "top_p", "batch_size"),
                         [(0.0, 1.0, 2), (1.0, 1.0, 3), (0.7, 0.9, 5)])
def test_engine_backend_equals_generate(tiny, temperature, top_p, batch_size):
    cfg = SamplingConfig(temperature=temperature, top_p=top_p, max_new_tokens=13,
                         batch_size=batch_size)
    seeds = [11, 2, 7, 5, 3]
    ref = generate(tiny, _prompts(tiny), cfg, seeds=seeds)
    got = EngineBackend(tiny).generate(
        [Request(tuple(p), s) for p, s in zip(_prompts(tiny), seeds)], cfg)
    for r, g in zip(ref, got):
        assert g.finish_reason == r.finish_reason
        assert g.ids == ([*r.ids, g.ids[-1]] if r.finish_reason == "eos" else r.ids)
        if g.finish_reason == "eos":
            assert g.ids[-1] in tiny.eos_ids


def test_engine_backend_eos_and_stop(tiny):
    """A planted EOS id ends a row with ``eos`` (token kept); a stop string with ``stop``."""
    cfg = SamplingConfig(max_new_tokens=20)
    free = EngineBackend(tiny).generate([Request(tuple(_prompts(tiny)[1]), 0)], cfg)[0]
    assert free.finish_reason == "length" and len(free.ids) == 20
    first = free.ids[0]
    tiny.hf.generation_config.eos_token_id = first
    try:
        got = EngineBackend(tiny).generate([Request(tuple(_prompts(tiny)[1]), 0)], cfg)[0]
    finally:
        tiny.hf.generation_config.eos_token_id = None
    assert (got.ids, got.finish_reason) == ([first], "eos")
    text = tiny.tokenizer.decode(free.ids[:3])
    stopped = EngineBackend(tiny).generate([Request(tuple(_prompts(tiny)[1]), 0)],
                                           SamplingConfig(max_new_tokens=20, stop=(text,)))[0]
    assert stopped.finish_reason == "stop" and stopped.ids == free.ids[:len(stopped.ids)]


def test_engine_backend_logprobs_equal_a_full_forward(tiny):
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=7)
    prompt = _prompts(tiny)[2]
    c = EngineBackend(tiny).generate([Request(tuple(prompt), 4)], cfg, logprobs=True)[0]
    assert c.logprobs is not None and len(c.logprobs) == len(c.ids)
    ids = torch.tensor([prompt + c.ids])
    with torch.no_grad():
        lp = tiny.hf(ids).logits[0].float().log_softmax(-1)
    want = [lp[len(prompt) - 1 + k, t].item() for k, t in enumerate(c.ids)]
    assert c.logprobs == pytest.approx(want, abs=1e-4)


def test_per_request_length_cap(tiny):
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=9, batch_size=4)
    reqs = [Request(tuple(p), i, cap) for i, (p, cap) in enumerate(zip(_prompts(tiny), [1, 2, 3, 5, 7]))]
    for r, c in zip(reqs, EngineBackend(tiny).generate(reqs, cfg)):
        assert len(c.ids) <= r.max_new_tokens
        assert c.finish_reason == "eos" or len(c.ids) == r.max_new_tokens


def test_backend_rollouts_equal_batched_rollouts(tiny):
    """Rollouts as requests (prefix + forced tokens as the prompt, the stop applied
    afterwards) give the batched engine's tokens: same seeds, same sampler."""
    trace = make_trace(tiny)
    cfg = SamplingConfig(temperature=1.0, top_p=0.9, max_new_tokens=11, batch_size=3)
    jobs = [Job(f"r/{i}/{r}", a, rollout_seed(1, i, r)) for i, (a, _) in enumerate(trace.spans[:3])
            for r in range(2)]
    jobs += [Job("f/0", trace.spans[2][1], rollout_seed(1, "f"), forced=(40, 41, 42), max_new_tokens=7),
             Job("f/1", trace.spans[1][1], 5, forced=(40, 41), max_new_tokens=2)]
    stop_tok = 101

    def stop(job, toks):
        return toks[-1] == stop_tok

    ref = {j.key: t for j, t in batched_rollouts(tiny, trace.ids, jobs, cfg, batch_size=4, stop=stop)}
    got = {j.key: t for j, t in backend_rollouts(tiny, EngineBackend(tiny), trace.ids, jobs, cfg,
                                                 stop=stop)}
    assert got == ref
    assert got["f/1"] == [40, 41]


def test_traces_through_a_backend_equal_the_engine(tiny, tmp_path):
    from mechreason.traces.run import run_traces
    from mechreason.traces.tasks import make_problems

    problems = make_problems("arithmetic", 3, seed=0)
    cfg = SamplingConfig(temperature=0.8, max_new_tokens=12, batch_size=2)
    ref = run_traces(tiny, problems, tmp_path / "a.jsonl", style="cot", sampling=cfg)
    got = run_traces(tiny, problems, tmp_path / "b.jsonl", style="cot", sampling=cfg,
                     generate_fn=iter_generate_via(EngineBackend(tiny)))
    assert [r["generated_ids"] for r in got] == [r["generated_ids"] for r in ref]
    assert [r["finish_reason"] for r in got] == [r["finish_reason"] for r in ref]


@pytest.mark.parametrize("bad", [Request((), 0), Request((1,), -1), Request((1,), 2**63),
                                 Request((1,), 0, 0)])
def test_bad_requests_rejected(tiny, bad):
    with pytest.raises(MechReasonError):
        EngineBackend(tiny).generate([bad], SamplingConfig())


def test_require_hooks():
    require_hooks("engine", "steering")
    with pytest.raises(HooksUnavailable, match="steering needs hooks"):
        require_hooks("vllm", "steering")


def test_vllm_directory_holds_the_tied_embedding(tmp_path):
    """What vLLM needs (DESIGN.md section 10): ``architectures`` in the config and, with
    tied embeddings, ``model.embed_tokens.weight`` (a file with only ``lm_head.weight``
    loads in vLLM and decodes token 0 forever). The tensors are the model's."""
    from safetensors.torch import load_file

    from mechreason.backends.vllm_backend import export_model_dir
    from mechreason.model.loading import Model
    from mechreason.model.tiny import TINY_CONFIG, tiny_random

    hf, tok, whash = tiny_random(0, tmp_path / "cache", {**TINY_CONFIG, "tie_word_embeddings": True})
    model = Model(name="tiny-tied", hf=hf, tokenizer=tok, weights_hash=whash)
    assert hf.lm_head.weight is hf.get_input_embeddings().weight
    d = export_model_dir(model, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] and cfg["tie_word_embeddings"]
    state = load_file(d / "model.safetensors")
    assert "lm_head.weight" not in state
    assert torch.equal(state["model.embed_tokens.weight"],
                       model.hf.get_input_embeddings().weight.float())
    assert set(state) == set(model.hf.state_dict()) - {"lm_head.weight"}
    assert export_model_dir(model, tmp_path) == d  # cached by weights hash


@pytest.mark.parametrize("argv", [
    ["--backend", "vllm", "capture", "--model", "tiny-random", "--input", "x", "--out", "o"],
    ["steer", "--backend", "vllm", "--model", "tiny-random", "--vector", "v", "--out", "o"],
])
def test_vllm_backend_refused_for_hook_commands(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--backend vllm serves black-box generation only" in err and "needs hooks" in err


def test_vllm_backend_refused_for_white_box_anchor_methods(tmp_path, capsys):
    traces = tmp_path / "t.jsonl"
    traces.write_text("")
    rc = main(["anchors", "--backend", "vllm", "--methods", "resample,receivers",
               "--traces", str(traces), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "'receivers' needs hooks" in err


@pytest.mark.parametrize("cmd", ["traces", "anchors"])
def test_ray_with_vllm_checks_its_environment_before_starting_ray(cmd, tmp_path, capsys,
                                                                  monkeypatch):
    """Each Ray worker would start vLLM from its environment: a missing one is one line,
    before Ray or a model starts (the run itself is tests/test_vllm.py's)."""
    monkeypatch.setenv("MECHREASON_VLLM_PYTHON", str(tmp_path / "no-python"))
    traces = tmp_path / "t.jsonl"
    traces.write_text("")
    argv = (["traces", "--task", "arithmetic", "--n", "1", "--out", str(tmp_path / "o.jsonl")]
            if cmd == "traces" else ["anchors", "--traces", str(traces), "--out", str(tmp_path / "o")])
    rc = main([*argv, "--backend", "vllm", "--ray", "local"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "setup.sh --with-vllm" in err


def test_vllm_backend_without_its_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MECHREASON_VLLM_PYTHON", str(tmp_path / "no-python"))
    rc = main(["traces", "--backend", "vllm", "--task", "arithmetic", "--n", "1",
               "--out", str(tmp_path / "t.jsonl")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "setup.sh --with-vllm" in err and len(err.splitlines()) == 1


class _Elsewhere(EngineBackend):
    """Our engine under another name and without hooks: what the resume and hook
    checks see of any other backend (real generation, nothing mocked)."""

    name = "elsewhere"
    hooks = False


def test_a_rollouts_directory_keeps_its_backend(tiny, tmp_path):
    from mechreason.anchors.embed import fallback_extract, fallback_grade
    from mechreason.anchors.resampling import ResampleConfig, run_rollouts

    trace = make_trace(tiny)
    cfg = ResampleConfig(rollouts=1, max_new_tokens=4, forced=False)
    kw = dict(extract=fallback_extract, grade=fallback_grade)
    first = run_rollouts(tiny, trace, cfg, tmp_path, backend=_Elsewhere(tiny), **kw)
    assert len(first) == trace.n
    assert run_rollouts(tiny, trace, cfg, tmp_path, backend=_Elsewhere(tiny), **kw) == first
    with pytest.raises(MechReasonError, match="backend"):
        run_rollouts(tiny, trace, cfg, tmp_path, **kw)


def test_white_box_methods_refused_on_a_backend_without_hooks(tiny, tmp_path):
    from mechreason.anchors.analysis import AnchorsConfig, analyze

    trace = make_trace(tiny)
    with pytest.raises(HooksUnavailable, match="'suppression' needs hooks"):
        analyze(tiny, [trace], AnchorsConfig(methods=("resample", "suppression")), tmp_path,
                backend=_Elsewhere(tiny))
    assert not (tmp_path / "rollouts.jsonl").exists()
