"""Behaviour clustering (planted clusters, sentence means) and the SAE CLIs end to end."""

from __future__ import annotations

import json

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.sae.behaviours import (
    BehaviourConfig,
    discover_behaviours,
    kmeans,
    nmi,
    normalise,
    sae_clusters,
    sentence_activations,
)
from mechreason.traces.sentences import split_sentences

HOOK = "blocks.2.hook_resid_post"
GEN = {"cot": ["Let me add 3 and 4. That gives 7. Wait, check again. So the answer is 7.",
               "Hmm, we take 9 away from 12. That leaves 3. Therefore the answer is 3.",
               "First double 5 to get 10. Maybe add 2 more. The answer is 12.",
               "Alternatively, count the apples one by one. There are 6. Answer: 6."],
       "direct": ["Answer: 7.", "The answer is 3.", "Answer: 12.", "It is 6."]}


def planted_clusters(n_per: int = 60, n: int = 5, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n, d, generator=g) * 3
    truth = torch.arange(n).repeat_interleave(n_per)
    return centres[truth] + 0.3 * torch.randn(len(truth), d, generator=g), truth


def test_nmi_oracle():
    assert nmi([0, 0, 1, 1], [5, 5, 7, 7]) == pytest.approx(1.0)
    assert nmi([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("method", ["kmeans", "sae"])
def test_clustering_recovers_planted_clusters(method):
    x, truth = planted_clusters()
    xn = normalise(x)
    assert torch.allclose(xn.norm(dim=1), torch.ones(len(x)), atol=1e-5)
    if method == "kmeans":
        assign = kmeans(xn, 5, seed=0)
    else:
        assign, z = sae_clusters(xn, BehaviourConfig(n_clusters=5, k=1, epochs=40))
        assert int((z > 0).sum(1).max()) <= 1
    assert nmi(assign.tolist(), truth.tolist()) > 0.9


def _records(tiny):
    out = []
    for i in range(4):
        for style, texts in GEN.items():
            p = tiny.encode(tiny.format_prompt(f"Problem {i}: what is it?"))
            text = texts[i]
            g = tiny.encode(text, special=False)
            assert len(g) == len(text.encode())  # byte tokenizer: char offsets are token offsets
            sents = [{"tok_start": len(p) + c.start, "tok_end": len(p) + c.end,
                      "labels": ["check" if c.text.startswith(("Wait", "Hmm")) else "compute"]}
                     for c in split_sentences(text)]
            out.append({"id": f"p{i}:{style}", "problem_id": f"p{i}", "style": style,
                        "prompt_ids": p, "generated_ids": g, "sentences": sents})
    return out


@pytest.fixture(scope="module")
def traces(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("beh")
    (d / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(tiny)))
    return d


def test_sentence_means_match_naive_and_mean_store(tiny, traces):
    from mechreason.activations import CaptureConfig, capture

    tok_store = capture(tiny, traces / "traces.jsonl", CaptureConfig(hooks=(HOOK,), dtype="float32"),
                        traces / "tok", progress=False)
    mean_store = capture(tiny, traces / "traces.jsonl",
                         CaptureConfig(hooks=(HOOK,), dtype="float32", aggregate="mean"),
                         traces / "mean", progress=False)
    x_tok, keys_tok = sentence_activations(tok_store, HOOK, phase=None)
    x_mean, keys_mean = sentence_activations(mean_store, HOOK, phase=None)
    assert keys_tok == keys_mean
    assert torch.allclose(x_tok, x_mean, atol=1e-5)
    item, s = keys_tok[3]
    rows = [n for n, r in enumerate(tok_store.rows) if r["item"] == item and r["sentence"] == s]
    assert torch.allclose(x_tok[3], tok_store.load(HOOK, rows).mean(0), atol=1e-6)
    res = discover_behaviours(tok_store, HOOK, BehaviourConfig(n_clusters=3, method="kmeans",
                                                               phase=None))
    sizes = torch.tensor([c["size"] for c in res["clusters"]], dtype=torch.float)
    assert int(sizes.sum()) == len(keys_tok)
    # difference-of-means directions: size-weighted they sum to zero
    assert torch.allclose((sizes[:, None] * res["directions"]).sum(0), torch.zeros(64), atol=1e-3)
    with pytest.raises(MechReasonError, match="cannot make 99 clusters"):
        discover_behaviours(tok_store, HOOK, BehaviourConfig(n_clusters=99, k=3))


def test_cli_end_to_end(tiny, traces, tmp_path):
    from mechreason.cli import main

    acts, sae = tmp_path / "acts", tmp_path / "sae"
    inp = str(traces / "traces.jsonl")
    assert main(["capture", "--model", "tiny-random", "--input", inp, "--hooks", HOOK,
                 "--dtype", "float32", "--out", str(acts)]) == 0
    assert main(["sae", "train", "--acts", str(acts), "--hook", HOOK, "--expansion", "2",
                 "--k", "4", "--batch-size", "128", "--epochs", "2", "--holdout", "0.25",
                 "--out", str(sae), "--no-progress"]) == 0
    cfg = json.loads((sae / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_sae"] == 128
    assert main(["sae", "eval", "--sae", str(sae), "--acts", str(acts), "--input", inp]) == 0
    ev = json.loads((sae / "eval.json").read_text())
    assert ev["fvu"] >= 0 and ev["l0"] <= 4 and ev["tokens"] > 0
    for score in ("contrast", "reason"):
        out = tmp_path / score
        assert main(["features", "--sae", str(sae), "--acts", str(acts), "--score", score,
                     "--input", inp, "--top", "3", "--out", str(out)]) == 0
        ranking = json.loads((out / "ranking.json").read_text())
        assert len(ranking["top"]) == 3 and "promotes" in ranking["top"][0]["logit_lens"]
    out = tmp_path / "beh"
    assert main(["behaviours", "--acts", str(acts), "--n-clusters", "3", "--phase", "all",
                 "--input", inp, "--out", str(out)]) == 0
    clusters = json.loads((out / "clusters.json").read_text())["clusters"]
    assert sum(c["size"] for c in clusters) == sum(len(r["sentences"]) for r in _records(tiny))
    assert (out / "cluster_0" / "direction.safetensors").is_file()
    # The store keeps its token ids: without --input, the same ranking and contexts.
    assert main(["features", "--sae", str(sae), "--acts", str(acts), "--score", "reason",
                 "--top", "3", "--out", str(tmp_path / "x")]) == 0
    assert (json.loads((tmp_path / "x" / "ranking.json").read_text())
            == json.loads((tmp_path / "reason" / "ranking.json").read_text()))
    assert main(["sae", "eval", "--sae", str(sae), "--acts", str(acts),
                 "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "eval.json").read_text()) == ev
    # A store written before ids were kept: --score reason says to pass --input.
    for side in acts.glob("**/*.json"):
        data = json.loads(side.read_text())
        if isinstance(data, dict) and "items" in data:
            for it in data["items"]:
                del it["token_ids"]
            side.write_text(json.dumps(data))
    assert main(["features", "--sae", str(sae), "--acts", str(acts), "--score", "reason",
                 "--out", str(tmp_path / "y")]) == 2  # a clear error, no crash
