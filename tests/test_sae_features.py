"""Reasoning-feature ranking against naive loops, on a real capture of the tiny model."""

from __future__ import annotations

import json
import math
import zlib

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.sae.features import (
    REASON_WORDS,
    contrast_scores,
    logit_lens,
    reason_scores,
    top_activations,
    word_windows,
)
from mechreason.sae.model import SAEConfig, SparseAutoencoder

HOOK = "blocks.1.hook_resid_post"
COT = ["Let me think. First 3 plus 4 is 7. Wait, check it again. Therefore 7.",
       "Hmm, maybe add them. 2 and 5 make 7. But another way gives 7 too.",
       "Perhaps we count: 1, 2, 3. However the answer is 3.",
       "Alternatively multiply. 3 times 3 is 9. Let me verify: 9.",
       "So 10 minus 4. That is 6. Wait, yes 6."]
DIRECT = ["Answer: 7", "Answer: 7.", "3", "Answer is 9", "6"]


@pytest.fixture(scope="module")
def store(tiny, tmp_path_factory):
    from mechreason.activations import CaptureConfig, capture

    d = tmp_path_factory.mktemp("feat")
    with open(d / "traces.jsonl", "w") as f:
        for i, (c, r) in enumerate(zip(COT, DIRECT)):
            for style, text in (("cot", c), ("direct", r)):
                p = tiny.encode(tiny.format_prompt(f"Problem {i}?"))
                f.write(json.dumps({"id": f"p{i}:{style}", "problem_id": f"p{i}", "style": style,
                                    "prompt_ids": p,
                                    "generated_ids": tiny.encode(text, special=False)}) + "\n")
    cfg = CaptureConfig(hooks=(HOOK,), dtype="float32", shard_rows=64)
    return capture(tiny, d / "traces.jsonl", cfg, d / "acts", progress=False)


@pytest.fixture(scope="module")
def sae():
    s = SparseAutoencoder(SAEConfig(d_in=64, d_sae=16, arch="relu", hook=HOOK), seed=1)
    with torch.no_grad():
        s.b_enc.fill_(0.3)  # most latents fire somewhere
    return s.eval()


def _acts(sae, store, n):
    return sae.encode(store.load(HOOK, [n]))[0]


@pytest.mark.parametrize("span", ["first-generated", "generated"])
def test_contrast_matches_naive_loop(sae, store, span):
    res = contrast_scores(sae, store, HOOK, span=span, n_top=5)

    def naive(problems):  # per trace: the mean code over its rows; then mean over traces
        per_trace = {"cot": {}, "direct": {}}
        for n, r in enumerate(store.rows):
            it = store.item(r["item"])
            if it["problem_id"] not in problems:
                continue
            p = it["prompt_len"]
            if (span == "first-generated" and r["pos"] != p) or r["pos"] < p:
                continue
            per_trace[it["style"]].setdefault(r["item"], []).append(_acts(sae, store, n))
        means = {s: torch.stack([torch.stack(v).mean(0) for v in per_trace[s].values()]).mean(0)
                 for s in per_trace}
        return means["cot"] - means["direct"]

    probs = {f"p{i}" for i in range(5)}
    assert torch.allclose(res.scores, naive(probs), atol=1e-5)
    half = set(sorted(probs, key=lambda p: zlib.crc32(p.encode()))[0::2])
    assert torch.allclose(res.discovery, naive(half), atol=1e-5)
    assert torch.allclose(res.heldout, naive(probs - half), atol=1e-5)
    assert res.top == sorted(range(16), key=lambda j: -float(res.discovery[j]))[:5]


def _naive_windows(tok, ids, word):
    pieces = [tok.decode([t]) for t in ids]
    starts = [sum(len(x) for x in pieces[:j]) for j in range(len(pieces))]
    text = "".join(pieces).lower()
    hits, i = set(), text.find(word)
    while i >= 0:
        end = i + len(word)
        if (i == 0 or not text[i - 1].isalpha()) and (end == len(text) or not text[end].isalpha()):
            covered = [j for j in range(len(ids)) if starts[j] < end and starts[j] + len(pieces[j]) > i]
            hits.update(range(max(0, covered[0] - 1), min(len(ids) - 1, covered[-1] + 2) + 1))
        i = text.find(word, i + 1)
    return hits


def test_reason_score_matches_naive_loop(tiny, sae, store):
    from mechreason.activations import load_items

    tokens = {it.id: it.ids for it in load_items(tiny, store.root.parent / "traces.jsonl")}
    res = reason_scores(sae, store, HOOK, tokens, tiny.tokenizer)
    wins = {iid: {w: _naive_windows(tiny.tokenizer, ids, w) for w in REASON_WORDS}
            for iid, ids in tokens.items()}
    assert wins == {iid: word_windows(tiny.tokenizer, ids) for iid, ids in tokens.items()}
    grp = {w: [[0.0] * 16, 0] for w in REASON_WORDS}
    s_in, s_out, n_in, n_out = [0.0] * 16, [0.0] * 16, 0, 0
    for n, r in enumerate(store.rows):
        a = _acts(sae, store, n).tolist()
        member = [w for w in REASON_WORDS if r["pos"] in wins[r["item"]][w]]
        for w in member:
            grp[w][1] += 1
            grp[w][0] = [x + y for x, y in zip(grp[w][0], a)]
        if member:
            s_in, n_in = [x + y for x, y in zip(s_in, a)], n_in + 1
        else:
            s_out, n_out = [x + y for x, y in zip(s_out, a)], n_out + 1
    present = [w for w in REASON_WORDS if grp[w][1]]
    assert len(present) >= 8  # the example uses most of the word list
    m_in, m_out = [x / n_in for x in s_in], [x / n_out for x in s_out]
    want = []
    for j in range(16):
        mu = [grp[w][0][j] / grp[w][1] for w in present]
        ps = [m / sum(mu) for m in mu]
        h = -sum(p * math.log(p) for p in ps if p > 0) / math.log(len(present))
        want.append(m_in[j] / sum(m_in) * h ** 0.7 - m_out[j] / sum(m_out))
    assert torch.allclose(res.scores, torch.tensor(want), atol=1e-5)


def test_top_activations_and_logit_lens(tiny, sae, store):
    top = top_activations(sae, store, HOOK, [0, 3], n=4)
    for lat, hits in top.items():
        everything = sorted((float(_acts(sae, store, n)[lat]) for n in range(len(store.rows))),
                            reverse=True)
        assert [v for v, _ in hits] == pytest.approx([v for v in everything[:4] if v > 0], abs=1e-5)
        for v, row in hits:
            assert float(_acts(sae, store, row)[lat]) == pytest.approx(v, abs=1e-5)
    lens = logit_lens(sae, tiny, [2], n=3)
    logits = tiny.hf.get_output_embeddings().weight @ (sae.W_dec[2] * tiny.hf.model.norm.weight)
    want = [tiny.tokenizer.decode([i]) for i in logits.topk(3).indices.tolist()]
    assert lens[2]["promotes"] == want


def test_contrast_needs_both_styles(sae, store):
    with pytest.raises(MechReasonError, match="needs 'cot' and 'plan' traces"):
        contrast_scores(sae, store, HOOK, direct="plan", cot="cot")


def test_latent_contrast_interval_is_student_t():
    """Planted: group A's latent 0 sits 1.0 above B's; the interval is Welch's SE times
    the t quantile at the Welch-Satterthwaite df (here n_A - 1 = 2, as B has no variance:
    4.30, not 1.96)."""
    from scipy.stats import t

    from mechreason.sae.features import latent_contrast

    a = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    res = latent_contrast(a, b)
    assert res.order(1) == [0] and float(res.diff[0]) == pytest.approx(1.0)
    se = (1.0 / 3) ** 0.5  # var(a) = 1, n = 3; var(b) = 0
    lo, hi = res.interval(0)
    assert (hi - lo) / 2 == pytest.approx(t.ppf(0.975, 2) * se)
    with pytest.raises(MechReasonError):
        latent_contrast(a[:0], b)
