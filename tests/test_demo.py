"""The demo runs end to end on the tiny model (--quick) and writes a report with every
section; stages that cannot run say why; a re-run resumes; the real model is slow."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mechreason.cli import main
from mechreason.errors import MechReasonError
from mechreason.report.demo import run_demo
from mechreason.report.demo_config import STAGE_ORDER, DemoConfig, available
from mechreason.report.stages import STAGES


class _Sections(HTMLParser):
    def __init__(self):
        super().__init__()
        self.status: dict[str, str] = {}
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "data-stage" in a:
            self.status[a["data-stage"]] = a["data-status"]
        if tag == "script" and a.get("src"):
            self.srcs.append(a["src"])


def _random_sae(tmp_path: Path, tiny) -> Path:
    from mechreason.sae.io import save_sae
    from mechreason.sae.model import SAEConfig, SparseAutoencoder

    cfg = SAEConfig(d_in=tiny.d_model, d_sae=4 * tiny.d_model, arch="topk", k=8,
                    hook="blocks.2.hook_resid_post", model=tiny.name)
    return save_sae(SparseAutoencoder(cfg, seed=3), tmp_path / "sae_tiny", model=tiny)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, tiny):
    tmp = tmp_path_factory.mktemp("demo")
    sae = _random_sae(tmp, tiny)
    out = tmp / "run"
    argv = ["demo", "--out", str(out), "--quick", "--model", "tiny-random", "--sae", str(sae),
            "--no-progress"]
    code = main(argv)
    return out, code, argv


def test_demo_quick_tiny_writes_every_section(demo_run):
    out, code, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == list(STAGE_ORDER)
    assert code == 0 and not [n for n, r in stages.items() if r["status"] == "failed"]
    for name in ("traces", "acts", "directions", "sae", "report"):
        assert stages[name]["status"] == "done", (name, stages[name])
    for name, rec in stages.items():
        assert rec["status"] in ("done", "skipped", "not available"), (name, rec)
        if rec["status"] != "done":
            assert rec["reason"], name
    if available("steering"):
        assert stages["steering"]["status"] == "done"
    else:
        assert "not available in this build" in stages["steering"]["reason"]
    page = _Sections()
    page.feed((out / "report.html").read_text())
    assert set(page.status) == set(STAGES) and page.srcs == []
    for name in STAGES:
        want = "ok" if stages[name]["status"] == "done" else stages[name]["status"]
        assert page.status[name] == want, name


def test_demo_key_figures_match_artifacts(demo_run):
    out, _, _ = demo_run
    figs = json.loads((out / "summary.json").read_text())["figures"]
    # the tiny model's random weights write one-sentence traces: no within-trace contrast
    assert "best_hook" not in figs and figs["primary_sweep"].startswith("not run")
    assert not (out / "directions" / "direction.json").exists()
    direction = json.loads((out / "directions" / "cot_vs_direct" / "direction.json").read_text())
    assert figs["cot_vs_direct_best_hook"] == direction["best_hook"]
    best = next(m for m in direction["metrics"] if m["hook"] == direction["best_hook"])
    assert figs["cot_vs_direct_best_auroc"] == best["auroc"]
    assert "by construction" in figs["cot_vs_direct_caveat"]
    report = (out / "report.html").read_text()
    assert "cot vs direct (second sweep)" in report and "by construction" in report
    feats = json.loads((out / "sae" / "features.json").read_text())
    scores = [f["score"] for f in feats["features"]]
    assert scores == sorted(scores, reverse=True) and figs["top_latent"] == feats["features"][0]["latent"]
    assert all(f["lo"] <= f["score"] <= f["hi"] for f in feats["features"])
    if "heldout_rank_corr" in feats:  # the SAE stage's held-out check is in this build
        assert -1.0 <= feats["heldout_rank_corr"] <= 1.0
        assert all("heldout" in f for f in feats["features"])
    else:
        assert "not available" in feats["heldout"] or "not computed" in feats["heldout"]
    ex = feats["features"][0]["examples"]
    assert ex and all(len(e["tokens"]) == len(e["acts"]) for e in ex)
    traces = [json.loads(line) for line in (out / "traces" / "traces.jsonl").read_text().splitlines()]
    cot = [t for t in traces if t["style"] == "cot"]
    assert figs["accuracy_cot"] == sum(t["correct"] is True for t in cot) / len(cot)


def test_demo_rerun_resumes(demo_run):
    out, _, argv = demo_run
    before = {p: p.stat().st_mtime_ns for p in (out / "directions").iterdir()}
    assert main(argv) == 0
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert stages["directions"]["status"] == "resumed" and stages["sae"]["status"] == "resumed"
    assert {p: p.stat().st_mtime_ns for p in (out / "directions").iterdir()} == before


def test_demo_refuses_other_model_in_same_dir(demo_run):
    out, _, _ = demo_run
    with pytest.raises(MechReasonError, match="tiny-random"):
        run_demo(DemoConfig(out=out, model="smollm2-135m-instruct", quick=True, progress=False))


def test_demo_rejects_bad_sae_path(tmp_path):
    with pytest.raises(MechReasonError, match="nope"):
        DemoConfig(out=tmp_path, sae=tmp_path / "nope")


@pytest.mark.slow
def test_demo_quick_real_model(tmp_path):
    summary = run_demo(DemoConfig(out=tmp_path / "run", quick=True, progress=False))
    st = summary["stages"]
    assert st["traces"]["status"] == st["directions"]["status"] == st["report"]["status"] == "done"
    assert not [n for n, r in st.items() if r["status"] == "failed"], st
    assert (tmp_path / "run" / "report.html").stat().st_size > 1_000_000
    assert st["sae"]["status"] == "done"  # the shipped SAE, with its training curves
    assert (tmp_path / "run" / "sae" / "training.json").is_file()


@pytest.mark.parametrize(("aurocs", "n_layers", "want"), [
    ([0.5, 0.9, 0.7, 0.6], 4, 1),                       # middle third of 4 layers is layer 1
    ([1.0] * 30, 30, 15),                               # ties go to the middle of the network
    ([1.0] * 12, 12, 6),
    ([0.99] + [0.6] * 11 + [0.8] + [0.6] * 17, 30, 12),  # layer 0 is outside the middle third
    ([0.7, 0.9, 0.8, 0.75, 0.6, 0.5, 0.9, 0.5, 0.5, 0.5, 0.5], 11, 6),
])
def test_steering_hook_picks_best_middle_layer(aurocs, n_layers, want):
    from mechreason.report.demo import steering_hook

    metrics = [{"hook": f"blocks.{i}.hook_resid_post", "auroc": a} for i, a in enumerate(aurocs)]
    assert steering_hook(metrics, n_layers) == f"blocks.{want}.hook_resid_post"


def test_demo_only_rejects_unknown_stage(tmp_path):
    with pytest.raises(MechReasonError, match="steerin"):
        DemoConfig(out=tmp_path, only=("steerin",))


def test_demo_only_reuses_existing_outputs(demo_run):
    out, _, argv = demo_run
    assert main([*argv, "--only", "report"]) == 0
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert stages["directions"]["status"] == "resumed" and stages["report"]["status"] == "done"
    assert stages["anchors"]["status"] in ("skipped", "resumed")


# n = 2: sd = sqrt(2), se = 1, t(0.975, df=1) = 12.706 (a z interval would claim 1.96)
@pytest.mark.parametrize(("xs", "want"), [([2.0], (2.0, 2.0, 2.0)),
                                          ([1.0, 3.0], (2.0, 2.0 - 12.7062, 2.0 + 12.7062))])
def test_mean_ci(xs, want):
    from mechreason.stats import mean_ci

    assert mean_ci(xs) == pytest.approx(want, abs=1e-4)


def test_shipped_sae_matches_model_name(tmp_path, tiny):
    from mechreason.report.demo_stages import shipped_sae

    folder = _random_sae(tmp_path, tiny)
    found, why = shipped_sae(tiny, tmp_path)
    assert found == folder and folder.name in why
    none, why = shipped_sae(tiny, tmp_path / "absent")
    assert none is None and "does not exist" in why


# --- the primary sweep: a label's sentences against the rest of the same cot traces -----

_TEXTS = ("First, add {a} and {b}. Wait, let me check that again. So we get {c}. "
          "Then take away {b}. Hmm, is that right? The answer is {a}.",
          "We need the total of {a} and {b}. Let me think about the plan. {a} + {b} = {c}. "
          "Let me verify: {c} - {b} = {a}. Therefore, the answer is {c}.")


def _canned(model, prompt_ids, cfg, *, seeds=None, progress=False):
    """A generate_fn writing multi-sentence reasoning (random weights write none)."""
    from mechreason.model.generation import Generation
    from mechreason.traces.sentences import decode_offsets

    for i, _ in enumerate(prompt_ids):
        a, b = 3 + i, 5 + 2 * i
        text = _TEXTS[i % 2].format(a=a, b=b, c=a + b)
        ids = model.encode(text, special=False)
        yield i, Generation(ids, decode_offsets(model.tokenizer, ids)[0], "eos")


@pytest.fixture(scope="module")
def sentence_store(tmp_path_factory, tiny):
    """cot and direct traces of 10 problems on the tiny model, every sentence labelled
    `planted` or `other` at random (labels carry no information about the text), captured
    at every layer."""
    import random

    from mechreason.activations import CaptureConfig, capture
    from mechreason.model.generation import SamplingConfig
    from mechreason.traces.run import read_traces, run_traces, write_traces
    from mechreason.traces.tasks import make_problems

    tmp = tmp_path_factory.mktemp("sentences")
    probs = make_problems("arithmetic", 10, seed=0)
    path = tmp / "traces.jsonl"
    for style in ("cot", "direct"):
        run_traces(tiny, probs, path, style=style, sampling=SamplingConfig(max_new_tokens=64),
                   generate_fn=_canned)
    recs, rng = read_traces(path), random.Random(0)
    for r in recs:
        tags = ["planted", "other"] + [rng.choice(["planted", "other"])
                                       for _ in r["sentences"][2:]]
        rng.shuffle(tags)
        for s, t in zip(r["sentences"], tags):
            s["labels"], s["behaviours"] = [t], []
    write_traces(tmp / "relabelled.jsonl", recs)
    cfg = CaptureConfig(hooks=("blocks.*.hook_resid_post",), positions="all")
    return capture(tiny, tmp / "relabelled.jsonl", cfg, tmp / "acts", progress=False)


def _sweep(groups, seed=0):
    from mechreason.directions.methods import get_method
    from mechreason.directions.sweep import layer_sweep

    return layer_sweep(get_method("mean-diff"), groups, test_frac=0.3, seed=seed)


def test_within_cot_contrast_shares_prompts_and_holds_problems_out_whole(sentence_store):
    from mechreason.report.demo_stages import label_counts, within_cot_contrast

    assert label_counts(sentence_store.items) == {"planted": 10, "other": 10}
    cs = within_cot_contrast(sentence_store, "planted")
    units = cs.a + cs.b
    assert {u.keys["style"] for u in units} == {"cot"}  # one prompt style: no prompt contrast
    assert all("planted" in u.keys["label"] for u in cs.a)
    assert all("planted" not in u.keys["label"] for u in cs.b)
    # every problem contributes to both groups: the two groups share every prompt
    assert {u.problem for u in cs.a} == {u.problem for u in cs.b} and len({u.problem for u in cs.a}) == 10
    res = _sweep([(h, *cs.groups(h)) for h in cs.hooks])
    sp = res.split
    for group, mask in ((cs.a, sp.test_a), (cs.b, sp.test_b)):  # held out whole, by problem
        assert [u.problem in sp.test_ids for u in group] == mask.tolist()
    assert sp.test_ids.isdisjoint(sp.train_ids)


def test_primary_sweep_is_not_perfect_at_layer0_by_construction(sentence_store, tiny):
    """Null: labels independent of the text give no perfect layer-0 separation, where the
    cot-vs-direct contrast of the same traces is perfect at layer 0 from the prompt alone.
    Planted: a direction added to one layer's `planted` sentences is found at that layer."""
    import torch

    from mechreason.directions.contrast import build_contrast
    from mechreason.directions.methods import Group
    from mechreason.report.demo_stages import within_cot_contrast

    cs = within_cot_contrast(sentence_store, "planted")
    groups = [(h, *cs.groups(h)) for h in cs.hooks]
    null = _sweep(groups)
    assert null.layers[0].sep.auroc < 1.0
    assert all(r.sep.auroc < 1.0 for r in null.layers)
    prompt = build_contrast([sentence_store], "style=cot:direct", "last-prompt")
    by_prompt = _sweep([(h, *prompt.groups(h)) for h in prompt.hooks])
    assert by_prompt.layers[0].sep.auroc == 1.0  # the old demo contrast: perfect at layer 0
    target = tiny.n_layers - 2
    u = torch.randn(tiny.d_model, generator=torch.Generator().manual_seed(1))
    planted = []
    for i, (h, a, b) in enumerate(groups):
        if i == target:
            a = Group(a.x + 3.0 * u * a.x.norm(dim=1).mean() / u.norm(), a.ids)
        planted.append((h, a, b))
    found = _sweep(planted)
    assert found.best == target and found.layers[target].sep.auroc > 0.95
    assert found.layers[0].sep.auroc == null.layers[0].sep.auroc  # untouched layers unchanged


def test_shipped_saes_folder_is_the_repositorys():
    """The demo finds the SAEs shipped in sae_checkpoints/ at the repository root."""
    from mechreason.report.demo_config import SHIPPED_SAES

    assert (SHIPPED_SAES / "smollm2-135m-instruct-l15-topk" / "cfg.json").is_file()
