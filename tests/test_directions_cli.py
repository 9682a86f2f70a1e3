"""``mechreason directions`` end to end on a tiny-model capture: sweep, artifact, GGUF."""

from __future__ import annotations

import json

import pytest
import torch

from mechreason.activations import CaptureConfig, capture
from mechreason.cli import main
from mechreason.directions.io import import_gguf, load_direction
from mechreason.directions.pipeline import DirectionsConfig
from mechreason.errors import MechReasonError

N_PROBLEMS = 11


@pytest.fixture(scope="module")
def acts(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    recs = []
    for p in range(N_PROBLEMS):
        q = f"Compute {p} times {p + 2}."
        for style, hint, gen in (("cot", " Think step by step.", "Step one: multiply. Done."),
                                 ("direct", " Answer only.", "It is so.")):
            recs.append({"id": f"{p}{style}", "question": q, "style": style,
                         "prompt_ids": tiny.encode(q + hint + "\n", special=False),
                         "generated_ids": tiny.encode(gen, special=False)})
    (root / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    cfg = CaptureConfig(hooks=("blocks.*.hook_resid_post",), positions="first-generated",
                        dtype="float32", batch_size=8)
    capture(tiny, root / "t.jsonl", cfg, root / "acts", progress=False)
    return root / "acts"


def test_cli_end_to_end(acts, tmp_path, capsys):
    out, gguf = tmp_path / "dir", tmp_path / "cv.gguf"
    rc = main(["directions", "--acts", str(acts), "--contrast", "style=cot:direct",
               "--aggregate", "first-generated", "--out", str(out), "--export-gguf", str(gguf)])
    assert rc == 0
    text = capsys.readouterr().out
    for layer in range(4):
        assert f"blocks.{layer}.hook_resid_post" in text
    assert "<- best" in text and f"from {N_PROBLEMS} problems" in text
    ds = load_direction(out)
    assert ds.hooks == [f"blocks.{i}.hook_resid_post" for i in range(4)]
    assert ds.counts["A"] == ds.counts["B"] == N_PROBLEMS
    side = json.loads((out / "direction.json").read_text())
    assert side["best_hook"] == ds.best_hook and len(side["metrics"]) == 4
    meta = json.loads((out / "meta.json").read_text())
    train, test = set(meta["split"]["train_problems"]), set(meta["split"]["test_problems"])
    assert not train & test and len(train | test) == N_PROBLEMS
    cv = import_gguf(gguf)  # default --gguf-layers all: every swept layer llama.cpp accepts
    assert sorted(cv.directions) == [1, 2, 3]  # block 0 skipped (llama.cpp rejects it)
    assert cv.model_hint == "llama"  # the architecture family, as repeng and llama.cpp write
    for hook, v in cv.hooks().items():
        assert torch.equal(v, ds.vector(hook))


@pytest.mark.parametrize("method", ["unit-mean-diff", "label-vs-all", "pca", "logistic"])
def test_cli_methods(acts, tmp_path, method):
    assert main(["directions", "--acts", str(acts), "--contrast", "style=cot:direct",
                 "--method", method, "--out", str(tmp_path / "d"),
                 "--hooks", "blocks.2.hook_resid_post"]) == 0
    assert load_direction(tmp_path / "d").method == method


@pytest.mark.parametrize(("argv", "msg"), [
    (["--contrast", "style=cot:terse"], "empty"),
    (["--contrast", "style=cot:direct", "--method", "pca2"], "unknown direction method"),
    (["--contrast", "style=cot:direct", "--aggregate", "sentence-start"], "sentence"),
    (["--contrast", "style=cot:direct", "--hooks", "blocks.9.hook_resid_post"], "hook"),
    (["--contrast", "style=cot:direct", "--export-layers", "0"], "block 1"),
    (["--contrast", "style=cot:direct", "--gguf-layers", "0-2"], "block 1"),
    (["--contrast", "style=cot:direct", "--gguf-layers", "2-9"], "not swept"),
    (["--contrast", "style=cot:direct", "--gguf-layers", "3-1"], "10-15"),
])
def test_cli_errors(acts, tmp_path, capsys, argv, msg):
    rc = main(["directions", "--acts", str(acts), "--out", str(tmp_path / "d"),
               "--export-gguf", str(tmp_path / "x.gguf"), *argv])
    assert rc == 2
    assert msg in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "want"), [("2-3", [2, 3]), ("1,3", [1, 3]), ("best", None)])
def test_cli_gguf_layers(acts, tmp_path, flag, want):
    gguf = tmp_path / "cv.gguf"
    assert main(["directions", "--acts", str(acts), "--contrast", "style=cot:direct",
                 "--out", str(tmp_path / "d"), "--export-gguf", str(gguf),
                 "--gguf-layers", flag, "--model-hint", "smol"]) == 0
    ds = load_direction(tmp_path / "d")
    cv = import_gguf(gguf)
    # the tiny capture's best layer is 0 (llama.cpp cannot hold it): best falls to the
    # best later layer by held-out AUROC, ties to the earlier one
    assert ds.best_hook == "blocks.0.hook_resid_post"
    aurocs = {i: m["auroc"] for i, m in enumerate(ds.metrics) if i >= 1}
    best = max(aurocs, key=lambda i: (aurocs[i], -i))
    assert sorted(cv.directions) == (want or [best]) and cv.model_hint == "smol"
    for hook, v in cv.hooks().items():
        assert torch.equal(v, ds.vector(hook))


def test_config_checks():
    with pytest.raises(MechReasonError, match="test_frac"):
        DirectionsConfig(acts=("x",), contrast="style=a:b", test_frac=0.0)
    with pytest.raises(MechReasonError, match="aggregation"):
        DirectionsConfig(acts=("x",), contrast="style=a:b", aggregate="mean")
