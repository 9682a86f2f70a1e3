"""The demo runs end to end on the tiny model (--quick) and writes a report with every
section; stages that cannot run say why; a re-run resumes; the real model is slow."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mechreason.cli import main
from mechreason.errors import MechReasonError
from mechreason.report.demo import STAGE_ORDER, DemoConfig, available, run_demo
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
    direction = json.loads((out / "directions" / "direction.json").read_text())
    assert figs["best_hook"] == direction["best_hook"]
    best = next(m for m in direction["metrics"] if m["hook"] == direction["best_hook"])
    assert figs["best_auroc"] == best["auroc"]
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
