"""Reading directions: logit lens against the model's own head, cosines, sentence projections."""

from __future__ import annotations

import pytest
import torch

from mechreason.activations import CaptureConfig, capture
from mechreason.directions.read import (
    cosine_matrix,
    final_norm,
    logit_lens,
    project_trace,
    sentence_projections,
)
from mechreason.errors import MechReasonError


@pytest.mark.parametrize("seed", [0, 1])
def test_logit_lens_ranks_like_the_models_head(tiny, seed):
    """Our scores are lm_head(final_norm(v)) up to one positive factor (the 1/RMS)."""
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(seed))
    res = logit_lens(tiny, v, k=7)
    with torch.no_grad():
        head = tiny.hf.get_output_embeddings()(final_norm(tiny)(v[None]))[0]
    want = torch.topk(head, 7).indices.tolist()
    assert [t.id for t in res.promoted] == want
    assert [t.id for t in res.suppressed] == torch.topk(-head, 7).indices.tolist()
    ratio = torch.tensor([t.score for t in res.promoted]) / head[want]
    torch.testing.assert_close(ratio, ratio[0].expand(7), rtol=1e-4, atol=1e-6)
    assert float(ratio[0]) > 0


def test_logit_lens_on_gemma_uses_the_models_own_norm_gain():
    """Gemma's norms scale by (1 + w). On a vector of unit RMS the HF model's own final
    norm is exactly that gain, so the lens must equal lm_head(norm(v)) itself, and the
    SAE stage's lens (one implementation) must promote the same tokens."""
    from mechreason.model.loading import load_model
    from mechreason.sae.features import logit_lens as sae_lens
    from mechreason.sae.model import SAEConfig, SparseAutoencoder

    gemma = load_model("tiny-random-gemma", device="cpu")
    norm = final_norm(gemma)
    with torch.no_grad():  # a gain far from 1, so w and 1 + w rank differently
        norm.weight.copy_(torch.randn(gemma.d_model, generator=torch.Generator().manual_seed(3)))
    v = torch.randn(gemma.d_model, generator=torch.Generator().manual_seed(4))
    v = v / v.pow(2).mean().sqrt()  # unit RMS: the norm's 1/RMS is 1 (up to eps)
    res = logit_lens(gemma, v, k=5)
    with torch.no_grad():
        head = gemma.hf.get_output_embeddings()(norm(v[None]))[0]
    assert [t.id for t in res.promoted] == torch.topk(head, 5).indices.tolist()
    torch.testing.assert_close(torch.tensor([t.score for t in res.promoted]),
                               torch.topk(head, 5).values, rtol=1e-4, atol=1e-4)
    sae = SparseAutoencoder(SAEConfig(d_in=gemma.d_model, d_sae=4, k=1))
    with torch.no_grad():
        sae.W_dec[1] = v
    assert sae_lens(sae, gemma, [1], n=5)[1]["promotes"] == [t.token for t in res.promoted]


def test_logit_lens_norm_choice_matters_and_signs_flip(tiny):
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(3))
    weight = final_norm(tiny).weight
    saved = weight.detach().clone()
    with torch.no_grad():  # make the gain non-trivial so the choice is visible
        weight.mul_(torch.linspace(0.2, 3.0, tiny.d_model))
    try:
        a, b = logit_lens(tiny, v, k=5), logit_lens(tiny, -v, k=5)
        raw = logit_lens(tiny, v, k=5, apply_norm=False)
    finally:
        with torch.no_grad():  # the model is shared by the session: restore it exactly
            weight.copy_(saved)
    assert [t.id for t in a.promoted] == [t.id for t in b.suppressed]
    assert [t.id for t in a.promoted] != [t.id for t in raw.promoted]


def test_logit_lens_bad_vector(tiny):
    with pytest.raises(MechReasonError, match="width"):
        logit_lens(tiny, torch.ones(tiny.d_model + 1))
    with pytest.raises(MechReasonError, match="NaN"):
        logit_lens(tiny, torch.full((tiny.d_model,), float("nan")))


def test_cosine_matrix():
    g = torch.Generator().manual_seed(0)
    vecs = {n: torch.randn(13, generator=g) for n in "abc"}
    vecs["d"] = -2.5 * vecs["a"]
    names, m = cosine_matrix(vecs)
    assert names == list("abcd") and m.shape == (4, 4)
    want = torch.nn.functional.cosine_similarity(vecs["b"], vecs["c"], dim=0)
    torch.testing.assert_close(m[1, 2], want)
    torch.testing.assert_close(m[0, 3], torch.tensor(-1.0))
    torch.testing.assert_close(m.diagonal(), torch.ones(4))
    with pytest.raises(MechReasonError, match="widths"):
        cosine_matrix({"a": torch.ones(3), "b": torch.ones(4)})


def test_sentence_projections_oracle():
    g = torch.Generator().manual_seed(1)
    acts, v = torch.randn(17, 11, generator=g), torch.randn(11, generator=g)
    spans = [(0, 3), (3, 10), (12, 17)]
    got = sentence_projections(acts, spans, 4.0 * v)
    u = v / v.norm()
    want = torch.stack([(acts[s:e] @ u).mean() for s, e in spans])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(MechReasonError, match="outside"):
        sentence_projections(acts, [(5, 18)], v)


@pytest.mark.parametrize("aggregate", ["token", "mean"])
def test_project_trace_equals_hidden_state_oracle(tiny, tmp_path, aggregate):
    import json

    text = "Let me add these. Wait, that was wrong. So it is five."
    pids = tiny.encode("Q: 2+3?\n", special=False)
    gids = tiny.encode(text, special=False)
    p = len(pids)
    spans = [(p + 0, p + 17), (p + 18, p + 39), (p + 40, p + len(gids))]
    rec = {"id": "t0", "prompt_ids": pids, "generated_ids": gids,
           "sentences": [{"tok_start": s, "tok_end": e, "labels": [f"l{i}"]}
                         for i, (s, e) in enumerate(spans)]}
    (tmp_path / "t.jsonl").write_text(json.dumps(rec) + "\n")
    cfg = CaptureConfig(hooks=("blocks.2.hook_resid_post",), dtype="float32",
                        aggregate=aggregate)
    store = capture(tiny, tmp_path / "t.jsonl", cfg, tmp_path / "acts", progress=False)
    v = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(5))
    got = project_trace(store, "t0", "blocks.2.hook_resid_post", v)
    with torch.no_grad():
        hs = tiny.hf(torch.tensor([pids + gids]), output_hidden_states=True).hidden_states[3][0]
    want = sentence_projections(hs, spans, v)
    assert [r["sentence"] for r in got] == [0, 1, 2]
    assert [r["labels"] for r in got] == [["l0"], ["l1"], ["l2"]]
    torch.testing.assert_close(torch.tensor([r["projection"] for r in got]), want,
                               rtol=1e-4, atol=1e-4)
