"""The report builds from full and partial run directories, says what is missing, parses
as HTML, loads no remote script, and shows the numbers the artifacts hold."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from mechreason.cli import main
from mechreason.report.html import ReportConfig, build_report
from mechreason.report.stages import STAGES

LABELS = ["plan_generation", "active_computation", "final_answer_emission"]


def _trace(i: int, style: str, correct: bool) -> dict:
    sents = [{"idx": k, "text": f"s{k}.", "labels": [LABELS[k % 3]]} for k in range(2 + i % 2)]
    return {"id": f"p{i}-{style}", "problem_id": f"p{i}", "style": style, "task": "arithmetic",
            "correct": correct, "n_generated_tokens": 10 + i, "sentences": sents, "model": "tiny-random"}


def write_traces(run: Path) -> None:
    recs = [_trace(i, s, i % 2 == 0) for i in range(4) for s in ("cot", "direct")]
    (run / "traces").mkdir(parents=True)
    (run / "traces" / "traces.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def write_directions(run: Path, aurocs=(0.5, 0.7, 0.9, 0.6)) -> None:
    d = run / "directions"
    d.mkdir(parents=True)
    metrics = [{"hook": f"blocks.{i}.hook_resid_post", "auroc": a, "auroc_ci95": [a - 0.1, min(1, a + 0.1)],
                "accuracy": a - 0.05, "cohens_d": 1.0, "random_auroc": 0.5, "norm": 1.0}
               for i, a in enumerate(aurocs)]
    best = max(range(len(aurocs)), key=lambda i: aurocs[i])
    (d / "direction.json").write_text(json.dumps({
        "hooks": [m["hook"] for m in metrics], "method": "mean-diff", "contrast": "style=cot:direct",
        "metrics": metrics, "best_hook": metrics[best]["hook"], "best_rule": "max AUROC",
        "counts": {"A": 4, "B": 4}}))
    (d / "meta.json").write_text(json.dumps({"mechreason_version": "0.1.0", "git_commit": "abc",
                                             "libraries": {"torch": "2"}}))


def write_sae(run: Path) -> None:
    d = run / "sae"
    d.mkdir(parents=True)
    feats = [{"latent": k, "score": 1.0 / (j + 1), "examples": [{"tokens": ["a", "b"], "acts": [0.0, 2.0]}]}
             for j, k in enumerate([7, 3, 11])]
    (d / "features.json").write_text(json.dumps({"score_name": "cot-minus-direct", "features": feats}))
    hist = [{"step": s, "loss": 1 / s, "fvu": 0.5, "l0": 8, "dead": 0.0} for s in (10, 20, 30)]
    (d / "training.json").write_text(json.dumps({"history": hist, "heldout": {"fvu": 0.125, "l0": 8.0}}))


def write_steering(run: Path) -> None:
    d = run / "steering"
    d.mkdir(parents=True)
    coefs = [0.0, 4.0, 8.0]
    arm = {"mean": [10.0, 20.0, 30.0], "lo": [8.0, 17.0, 26.0], "hi": [12.0, 23.0, 34.0]}
    ctrl = {"mean": [10.0, 10.5, 11.0], "lo": [8.0, 8.5, 9.0], "hi": [12.0, 12.5, 13.0]}
    (d / "summary.json").write_text(json.dumps({"coefs": coefs, "position": "first-generated",
                                                "metrics": {"generated tokens": {"steered": arm, "control": ctrl}}}))


def write_anchors(run: Path) -> None:
    from safetensors.torch import save_file

    d = run / "anchors"
    d.mkdir(parents=True)
    rows = [{"idx": i, "text": f"s{i}.", "labels": [LABELS[i % 3]], "suppression_out": 0.1 * i,
             "receiver_score": 0.2} for i in range(4)]
    (d / "table.json").write_text(json.dumps({"rows": rows, "rank_correlations": [
        {"a": "suppression_out", "b": "receiver_score", "rho": 0.25, "ci_lo": -0.5, "ci_hi": 0.8, "n": 4}]}))
    kurt = [[math.nan] * 3, [1.0, 2.0, 3.0]]
    (d / "receivers.json").write_text(json.dumps({"heads": [[1, 2]], "kurtosis": kurt}))
    save_file({"matrix": torch.arange(16.0).reshape(4, 4)}, str(d / "suppression.safetensors"))


class Page(HTMLParser):
    """Collects script srcs, sections (id -> status) and the visible text."""

    def __init__(self):
        super().__init__()
        self.srcs, self.sections, self.text = [], {}, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.srcs.append(a["src"])
        if tag == "section" and "data-stage" in a:
            self.sections[a["data-stage"]] = a["data-status"]

    def handle_data(self, data):
        self.text.append(data)


def parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text())
    p.close()
    return p


def test_partial_run_says_what_is_missing(tmp_path):
    write_traces(tmp_path)
    write_directions(tmp_path)
    out, sections = build_report(ReportConfig(run_dir=tmp_path))
    page = parse(out)
    assert page.srcs == []
    assert page.sections == {"traces": "ok", "acts": "missing", "directions": "ok", "sae": "missing",
                             "steering": "missing", "anchors": "missing"}
    text = " ".join(page.text)
    for missing in ("acts/cfg.json", "sae/features.json", "steering/summary.json", "anchors/table.json"):
        assert f"missing: {missing}" in text
    by = {s.key: s for s in sections}
    sweep = by["directions"].figures[0]
    auroc = next(t for t in sweep.data if t.name == "auroc")
    assert list(auroc.y) == [0.5, 0.7, 0.9, 0.6]
    best = next(n for n in by["directions"].numbers if n.name.startswith("held-out AUROC"))
    assert (best.value, best.lo, best.hi) == (0.9, pytest.approx(0.8), 1.0)
    acc = {n.name: n for n in by["traces"].numbers}["accuracy (cot, n=4)"]
    assert acc.value == 0.5 and 0.0 < acc.lo < 0.5 < acc.hi < 1.0
    assert 'href="directions/direction.json"' in out.read_text()


def write_full_run(run: Path, model) -> None:
    from mechreason.activations import CaptureConfig, capture

    for w in (write_traces, write_directions, write_sae, write_steering, write_anchors):
        w(run)
    capture(model, ["one two three", "four five"], CaptureConfig(hooks=("blocks.1.hook_resid_post",)),
            run / "acts")
    (run / "summary.json").write_text(json.dumps({"model": "tiny-random", "figures": {"x": 1.5}}))


def test_full_run_every_section_ok(tmp_path, tiny):
    write_full_run(tmp_path, tiny)
    out, sections = build_report(ReportConfig(run_dir=tmp_path, figures_dir=tmp_path / "figs"))
    page = parse(out)
    assert page.sections == dict.fromkeys(STAGES, "ok")
    assert page.srcs == []
    by = {s.key: s for s in sections}
    lines = {t.name: list(t.y) for t in by["steering"].figures[0].data if t.mode == "lines+markers"}
    assert lines == {"steered": [10.0, 20.0, 30.0], "random control": [10.0, 10.5, 11.0]}
    assert [t.name for t in by["anchors"].figures[0].data] == sorted(set(LABELS))
    assert by["anchors"].figures[2].data[0].z[3][1] == 13.0
    assert list(by["sae"].figures[0].data[0].customdata) == [7, 3, 11]
    assert {n.name: n.value for n in by["acts"].numbers}["items"] == 2
    assert {n.name: n.value for n in by["sae"].numbers}["SAE training: held-out fvu"] == 0.125
    assert 'data-latent="7"' in out.read_text()
    n_figs = sum(len(s.figures) for s in sections)
    assert len(list((tmp_path / "figs").glob("*.html"))) == n_figs


def test_stage_status_from_summary_and_bad_file(tmp_path):
    write_directions(tmp_path)
    (tmp_path / "directions" / "direction.json").write_text(json.dumps({"metrics": []}))
    (tmp_path / "summary.json").write_text(json.dumps(
        {"stages": {"steering": {"status": "not available", "reason": "not available in this build"}}}))
    _, sections = build_report(ReportConfig(run_dir=tmp_path))
    by = {s.key: s for s in sections}
    assert by["steering"].status == "not available"
    assert "not available in this build" in by["steering"].reason
    assert "steering/summary.json" in by["steering"].reason
    assert by["directions"].status == "error" and "metrics" in by["directions"].reason


def test_cli_report(tmp_path, capsys):
    write_traces(tmp_path)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").is_file()
    assert "traces      ok" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2


def test_links_are_unique(tmp_path):
    write_directions(tmp_path)
    _, sections = build_report(ReportConfig(run_dir=tmp_path))
    links = next(s for s in sections if s.key == "directions").links
    assert len(links) == len(set(links)) and tmp_path / "directions" / "meta.json" in links


def test_sae_section_reads_features_cli_ranking(tmp_path):
    """`mechreason features --out RUN/features` writes ranking.json; the report reads it."""
    d = tmp_path / "features"
    d.mkdir()
    top = [{"latent": 5, "score": 0.5, "heldout": 0.4, "logit_lens": {},
            "top": [{"act": 2.5, "item": "p1:cot", "pos": 40, "token": " so",
                     "context": "3 + 4 = 7[[ so]] the answer", "sentence_text": "3 + 4 = 7 so"}]},
           {"latent": 9, "score": 0.25, "heldout": -0.1, "top": []}]
    (d / "ranking.json").write_text(json.dumps({"score": "contrast", "heldout_rank_corr": 0.3, "top": top}))
    _, sections = build_report(ReportConfig(run_dir=tmp_path))
    sae = next(s for s in sections if s.key == "sae")
    assert sae.status == "ok" and list(sae.figures[0].data[0].customdata) == [5, 9]
    assert 'data-act="2.5"' in sae.snippets[0] and ">3 + 4 = 7<" in sae.snippets[0]
    assert {n.name: n.value for n in sae.numbers}["heldout_rank_corr"] == 0.3


def test_sae_missing_names_both_files(tmp_path):
    write_traces(tmp_path)
    _, sections = build_report(ReportConfig(run_dir=tmp_path))
    sae = next(s for s in sections if s.key == "sae")
    assert sae.reason == "missing: sae/features.json or ranking.json"


def _arm(name, alpha, acc, length, kl=None):
    row = {"arm": name, "alpha": alpha, "n": 10, "accuracy": acc, "accuracy_ci": [acc - 0.1, acc + 0.1],
           "length_mean": length, "length_ci": [length - 2, length + 2], "steps_share": 0.5,
           "steps_ci": [0.2, 0.8]}
    if kl is not None:
        row |= {"kl": kl, "kl_low": kl / 2, "kl_high": kl * 2}
    return row


@pytest.mark.parametrize("alphas", [[2.0], [1.0, 4.0]])
def test_steering_section_reads_experiment_summary(tmp_path, alphas):
    """`mechreason.steering.experiment.run_experiment` writes one row per arm."""
    from mechreason.report.readers import arms_as_dose_response

    tag = (lambda a: "") if len(alphas) == 1 else (lambda a: f"_a{a:g}")
    rows = [_arm("unsteered", 0.0, 0.1, 20.0)]
    for a in alphas:
        rows += [_arm(f"steered{tag(a)}", a, 0.1 + a / 10, 20.0 + a, kl=a), _arm(f"control{tag(a)}", a, 0.1, 20.0, kl=a / 4)]
    summary = {"steering": {"vector": "d", "hook": "blocks.1.hook_resid_post", "norm": 3.0}, "arms": rows}
    dose = arms_as_dose_response(summary)
    assert dose["coefs"] == [0.0, *alphas] and dose["hook"] == "blocks.1.hook_resid_post"
    acc = dose["metrics"]["accuracy"]
    assert acc["steered"]["mean"] == pytest.approx([0.1, *(0.1 + a / 10 for a in alphas)])
    assert acc["control"]["mean"] == pytest.approx([0.1] * (len(alphas) + 1))
    assert acc["steered"]["lo"][0] == pytest.approx(0.0)
    kl = dose["metrics"]["KL vs unsteered"]
    assert kl["steered"]["mean"] == [0.0, *alphas] and kl["control"]["hi"][-1] == alphas[-1] / 2
    d = tmp_path / "steering"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(summary))
    _, sections = build_report(ReportConfig(run_dir=tmp_path))
    sec = next(s for s in sections if s.key == "steering")
    assert sec.status == "ok" and len(sec.figures) == 4
    lines = {t.name: list(t.y) for t in sec.figures[1].data if t.mode == "lines+markers"}
    assert lines["steered"] == [20.0, *(20.0 + a for a in alphas)]


def test_report_renders_in_a_browser(tmp_path, tiny):
    """Headless Chromium runs the page's inline plotly.js, offline: every figure <div>
    becomes a plot with its SVG (what a reader sees), and nothing else is fetched."""
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("MECHREASON_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MECHREASON_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (apt install chromium)")
    write_full_run(tmp_path, tiny)
    out, sections = build_report(ReportConfig(run_dir=tmp_path))
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
           "--dump-dom", out.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    n_figs = sum(len(s.figures) for s in sections)
    rendered = re.findall(r'<div id="fig-[^"]+" class="plotly-graph-div js-plotly-plot"', dom)
    assert n_figs >= 8 and len(rendered) == n_figs
    assert dom.count('class="main-svg"') >= n_figs
