"""Steering evaluation, the experiment runner and CLI, and CoT-decoding (tiny model)."""

from __future__ import annotations

import json

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.methods.cot_decoding import _answer_span, cot_decode
from mechreason.steering import Add, direction_vector
from mechreason.steering.evaluate import (
    kl_vs_unsteered,
    last_prompt_acts,
    mean_ci,
    random_like,
    reasons_in_steps,
)
from tests._hf import hf_generate

HOOK = "blocks.2.hook_resid_post"


@pytest.mark.parametrize(("text", "want"), [
    ("The answer is 7.", False),
    ("Tom has 3. He gets 4 more, so 3 + 4 = 7. The answer is 7.", True),
    ("First, 12 / 3 = 4. Then we are done.", True),
    ("I think it is 7. The answer is 7.", False),
    ("3 + 4 = 7", False),
])
def test_reasons_in_steps(text, want):
    assert reasons_in_steps(text) is want


def test_mean_ci_is_the_student_t_interval():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0, 6.0])
    assert m == 3.0
    assert hi - m == pytest.approx(3.182446 * (14 / 3) ** 0.5 / 2)  # t(0.975, df=3)
    assert m - lo == pytest.approx(hi - m)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_random_control_has_equal_norm_and_differs(seed):
    v = torch.randn(64, generator=torch.Generator().manual_seed(99)) * 3
    r = random_like(v, seed)
    assert r.norm() == pytest.approx(float(v.norm()), rel=1e-6)
    assert abs(float(torch.nn.functional.cosine_similarity(r, v, dim=0))) < 0.5


def test_kl_is_zero_at_alpha_zero_and_grows_with_alpha(tiny):
    texts = [(tiny.encode("Q: 2+2?"), tiny.encode("A: 4.", special=False)),
             (tiny.encode("Hi"), tiny.encode(" there", special=False))]
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(0))
    kls = [kl_vs_unsteered(tiny, [Add(hook=HOOK, vector=v, alpha=a, positions="first")],
                           texts)[0] for a in (0.0, 1.0, 4.0)]
    assert kls[0] == 0.0
    assert 0 < kls[1] < kls[2]


def test_last_prompt_acts_are_the_first_token_position(tiny):
    prompts = [tiny.encode("abc"), tiny.encode("a longer prompt")]
    acts = last_prompt_acts(tiny, prompts, HOOK)
    for i, p in enumerate(prompts):
        got = []
        from mechreason.model.hooks import hooks_context

        with hooks_context(tiny, {HOOK: lambda x, got=got: got.append(x[0, -1])}), \
                torch.inference_mode():
            tiny.hf(input_ids=torch.tensor([p]))
        torch.testing.assert_close(acts[i], got[0], rtol=1e-5, atol=1e-5)


def _direction_dir(tmp_path, d: int):
    from mechreason.directions.io import DirectionSet, save_direction

    vecs = torch.randn(2, d, generator=torch.Generator().manual_seed(3))
    ds = DirectionSet(vectors=vecs, hooks=["blocks.1.hook_resid_post", HOOK], method="mean-diff",
                      best_hook=HOOK)
    return save_direction(tmp_path / "dir", ds), vecs


def test_direction_vector_reads_the_directions_stage(tmp_path):
    root, vecs = _direction_dir(tmp_path, 64)
    v, hook = direction_vector(root)
    assert hook == HOOK and torch.equal(v, vecs[1])
    v, hook = direction_vector(root, hook="blocks.1.hook_resid_post")
    assert torch.equal(v, vecs[0])
    with pytest.raises(MechReasonError, match="did you mean"):
        direction_vector(root, hook="blocks.1.hook_resid_pots")


def test_steer_cli_writes_arms_and_summary(tmp_path, capsys):
    from mechreason.cli import main

    root, _ = _direction_dir(tmp_path, 64)
    out = tmp_path / "run"
    code = main(["steer", "--model", "tiny-random", "--vector", str(root), "--alpha", "0,8",
                 "--positions", "first", "--n", "3", "--max-new-tokens", "6", "--kl-texts", "2",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cfg.json", "control_a0.jsonl", "control_a8.jsonl", "fingerprint.json",
                     "meta.json",
                     "steered_a0.jsonl", "steered_a8.jsonl", "summary.json", "unsteered.jsonl"]
    rows = {r["arm"]: r for r in json.loads((out / "summary.json").read_text())["arms"]}
    base = [json.loads(x) for x in (out / "unsteered.jsonl").read_text().splitlines()]
    zero = [json.loads(x) for x in (out / "steered_a0.jsonl").read_text().splitlines()]
    assert [r["generated_ids"] for r in base] == [r["generated_ids"] for r in zero]
    assert rows["steered_a0"]["kl"] == 0.0 and rows["steered_a8"]["kl"] > 0
    assert rows["unsteered"]["n"] == 3
    assert "steered_a8" in capsys.readouterr().out


def test_steer_cli_rejects_bad_input_before_work(tmp_path):
    from mechreason.steering.experiment import SteerConfig

    with pytest.raises(MechReasonError, match="exactly one"):
        SteerConfig(vector=None, sae=None)
    with pytest.raises(MechReasonError, match="--latent"):
        SteerConfig(sae=str(tmp_path))
    with pytest.raises(MechReasonError, match="unknown positions"):
        SteerConfig(vector=str(tmp_path), positions="middle")


def test_answer_span_covers_the_answer_tokens(tiny):
    ids = tiny.encode("So 3 + 4 = 7. The answer is 12.", special=False)
    _, answer, span = _answer_span(tiny, ids)
    assert answer == "12"
    assert tiny.tokenizer.decode(ids[span[0]:span[1]]) == "12"


def test_cot_decoding_branches_and_margins_match_full_forwards(tiny):
    prompt = tiny.encode("Q: 5+3?")
    res = cot_decode(tiny, prompt, k=3, max_new_tokens=6)
    with torch.inference_mode():
        first = tiny.hf(input_ids=torch.tensor([prompt])).logits[0, -1].softmax(-1)
    assert [p.ids[0] for p in res.paths] == first.topk(3).indices.tolist()
    for path in res.paths:
        seq = prompt + path.ids
        with torch.inference_mode():
            probs = tiny.hf(input_ids=torch.tensor([seq])).logits[0].softmax(-1)
        top = probs[len(prompt) - 1:len(seq) - 1].topk(2, dim=-1)
        torch.testing.assert_close(torch.tensor(path.margins),
                                   top.values[:, 0] - top.values[:, 1], rtol=1e-4, atol=1e-5)
        assert path.ids[1:] == top.indices[1:, 0].tolist()  # greedy after the branch
    assert res.best.score == max(p.score for p in res.paths)


def test_cot_decoding_runs_under_steering(tiny):
    from mechreason.steering import steer

    prompt = tiny.encode("Q: 5+3?")
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(1)) * 4
    plain = cot_decode(tiny, prompt, k=2, max_new_tokens=5)
    with steer(tiny, Add(hook=HOOK, vector=v, alpha=3.0, positions="all")):
        steered = cot_decode(tiny, prompt, k=2, max_new_tokens=5)
    assert [p.ids for p in plain.paths] != [p.ids for p in steered.paths]
    assert hf_generate(tiny, [prompt], max_new_tokens=5)[0][:1] == plain.paths[0].ids[:1]


def test_sweep_over_layers_alphas_and_seeds(tiny, tmp_path):
    from mechreason.steering.experiment import across_seeds, steering_sweep
    from mechreason.traces.tasks import make_problems

    problems = make_problems("arithmetic", 2, seed=0)
    vecs = {f"blocks.{L}.hook_resid_post": torch.randn(64, generator=torch.Generator()
                                                        .manual_seed(L)) for L in (1, 3)}
    rows = steering_sweep(tiny, problems, vecs, alphas=(0.0, 6.0), seeds=(0, 1), out=tmp_path,
                 max_new_tokens=3, temperature=1.0)
    assert len(rows) == 2 * (1 + 2 * 2 * 2)  # seeds x (unsteered + hooks x alphas x arms)
    by = {(r["hook"], r["alpha"], r["seed"], r["arm"]): r for r in rows}
    for s in (0, 1):  # alpha 0 reproduces the unsteered traces for each seed
        base = (tmp_path / f"unsteered_s{s}.jsonl").read_text().splitlines()
        zero = (tmp_path / f"steered_blocks.1.hook_resid_post_a0_s{s}.jsonl").read_text()
        assert [json.loads(x)["generated_ids"] for x in base] == \
            [json.loads(x)["generated_ids"] for x in zero.splitlines()]
        assert by[("blocks.3.hook_resid_post", 6.0, s, "control")]["n"] == 2
    agg = across_seeds(rows, "mean_tokens")
    assert {a["n_seeds"] for a in agg} == {2}
