"""Every figure renders from fixture data, and the figure holds exactly that data."""

from __future__ import annotations

import logging
import math
import os
import struct
from html.parser import HTMLParser

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.report import plots

LAYERS = [0, 1, 2, 3, 5, 7, 11]
AUROC = [0.5, 0.55, 0.61, 0.72, 0.93, 0.88, 0.7]
ACC = [0.5, 0.52, 0.6, 0.7, 0.9, 0.85, 0.66]


def test_layer_sweep_data_and_best_marker():
    fig = plots.layer_sweep(LAYERS, {"auroc": torch.tensor(AUROC), "accuracy": ACC}, best_layer=5)
    by_name = {t.name: t for t in fig.data}
    assert list(by_name["auroc"].x) == LAYERS
    assert list(by_name["auroc"].y) == pytest.approx(AUROC)
    assert list(by_name["accuracy"].y) == ACC
    star = by_name["best layer 5"]
    assert list(star.x) == [5] and list(star.y) == pytest.approx([0.93])
    assert fig.layout.shapes[0].x0 == 5


@pytest.mark.parametrize("bad", [{"auroc": AUROC[:-1]}, {"auroc": [*AUROC, 1.0]}])
def test_layer_sweep_rejects_length_mismatch(bad):
    with pytest.raises(MechReasonError, match="auroc"):
        plots.layer_sweep(LAYERS, bad)


def test_layer_sweep_rejects_unknown_best_layer():
    with pytest.raises(MechReasonError, match="best_layer 4"):
        plots.layer_sweep(LAYERS, {"auroc": AUROC}, best_layer=4)


def test_dose_response_bands_and_control():
    coefs, mean, lo, hi = [0, 2, 4, 8], [0.1, 0.3, 0.5, 0.4], [0.0, 0.2, 0.35, 0.3], [0.2, 0.4, 0.6, 0.5]
    ctrl = {"coefs": coefs, "mean": [0.1, 0.11, 0.09, 0.1], "lo": [0, 0, 0, 0], "hi": [0.2] * 4}
    fig = plots.dose_response(coefs, mean, lo, hi, control=ctrl, metric="accuracy")
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    assert list(lines["steered"].x) == coefs and list(lines["steered"].y) == mean
    assert list(lines["random control"].y) == ctrl["mean"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 2
    # The band polygon runs along hi then back along lo.
    assert list(bands[0].y) == hi + lo[::-1] and list(bands[0].x) == coefs + coefs[::-1]


def test_dose_response_control_needs_all_keys():
    with pytest.raises(MechReasonError, match="hi"):
        plots.dose_response([0, 1], [0, 1], [0, 1], [0, 1], control={"coefs": [0], "mean": [0], "lo": [0]})


def test_sae_training_curves_one_panel_per_curve():
    steps = [0, 10, 20, 30, 40]
    curves = {"mse": [1.0, 0.5, 0.3, 0.2, 0.15], "l0": [64, 40, 32, 32, 32], "dead": [0, 0, 0.1, 0.1, 0.2]}
    fig = plots.sae_training_curves(steps, curves)
    assert [t.name for t in fig.data] == list(curves)
    for t, (_name, ys) in zip(fig.data, curves.items()):
        assert list(t.x) == steps and list(t.y) == ys
    assert {t.yaxis for t in fig.data} == {"y", "y2", "y3"}


def test_feature_ranking_keeps_order_and_truncates():
    feats, scores = [17, 3, 99, 5, 8], [2.5, 1.5, 1.25, 0.5, 0.25]
    fig = plots.feature_ranking(feats, scores, top=3)
    bar = fig.data[0]
    assert list(bar.x) == ["#17", "#3", "#99"] and list(bar.y) == scores[:3]
    assert list(bar.customdata) == feats[:3]


class _Spans(HTMLParser):
    def __init__(self):
        super().__init__()
        self.acts: list[float] = []
        self.text: list[str] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "span" and a.get("class") == "tok":
            self.acts.append(float(a["data-act"]))
            self._in = True

    def handle_endtag(self, tag):
        self._in = False

    def handle_data(self, data):
        if self._in:
            self.text.append(data)


def test_latent_examples_html_tokens_and_shading():
    examples = [{"tokens": ["Wait", ",", " <b>", " check"], "acts": [4.0, 0.0, 1.0, 2.0], "label": "check"},
                {"tokens": ["So", " x"], "acts": torch.tensor([0.5, 0.0])}]
    snippet = plots.latent_examples_html(examples, latent=42)
    p = _Spans()
    p.feed(snippet)
    assert p.acts == [4.0, 0.0, 1.0, 2.0, 0.5, 0.0]
    assert p.text == ["Wait", ",", " <b>", " check", "So", " x"]  # escaped, so no tag injected
    assert "rgba(239,85,59,1.000)" in snippet and "rgba(239,85,59,0.500)" in snippet
    assert 'data-latent="42"' in snippet and "[check]" in snippet


def test_sentence_importance_groups_by_label():
    imp = [0.1, 0.9, 0.3, 0.05, 0.4]
    labels = [["plan"], "compute", ["check", "compute"], [], "compute"]
    texts = [f"sentence {i}." for i in range(5)]
    fig = plots.sentence_importance(imp, labels, texts=texts)
    by = {t.name: t for t in fig.data}
    assert set(by) == {"plan", "compute", "check", "unlabelled"}
    assert list(by["compute"].x) == [1, 4] and list(by["compute"].y) == [0.9, 0.4]
    assert list(by["check"].x) == [2] and list(by["unlabelled"].x) == [3]
    got = sorted((x, y) for t in fig.data for x, y in zip(t.x, t.y))
    assert got == list(enumerate(imp))


def test_sentence_importance_intervals_and_ceiling():
    imp = [0.5, 2.0, 20.7]
    ivs = [[0.25, 1.0], [1.5, 2.0], [20.7, 20.7]]
    fig = plots.sentence_importance(imp, ["a", "b", "a"], intervals=ivs,
                                    saturated=[False, False, True])
    by = {t.name: t for t in fig.data}
    assert list(by["a"].error_y.array) == [0.5, 0.0] and list(by["a"].error_y.arrayminus) == [0.25, 0.0]
    assert list(by["b"].error_y.array) == [0.0] and list(by["b"].error_y.arrayminus) == [0.5]
    assert list(by["a"].marker.pattern.shape) == ["", "/"]
    with pytest.raises(MechReasonError, match="intervals"):
        plots.sentence_importance(imp, ["a", "b", "a"], intervals=ivs[:2])


@pytest.mark.parametrize("fn", [plots.suppression_matrix, plots.receiver_kurtosis])
def test_heatmaps_hold_the_matrix(fn):
    m = torch.arange(15, dtype=torch.float32).reshape(3, 5) / 7
    fig = fn(m)
    assert [list(r) for r in fig.data[0].z] == m.tolist()


@pytest.mark.parametrize("fn", [plots.suppression_matrix, plots.receiver_kurtosis])
def test_heatmaps_reject_ragged(fn):
    with pytest.raises(MechReasonError, match="rectangular"):
        fn([[1.0, 2.0], [3.0]])


def test_receiver_kurtosis_marks_top_heads_with_nan_rows():
    k = [[math.nan] * 3, [1.0, 5.0, 2.0], [9.0, 0.5, 3.0]]
    fig = plots.receiver_kurtosis(k, top_heads=[(2, 0), (1, 1)])
    marks = fig.data[1]
    assert list(marks.x) == [0, 1] and list(marks.y) == [2, 1]
    assert math.isnan(fig.data[0].z[0][0])


def test_label_fractions_fills_missing_labels_with_zero():
    fr = {"cot": {"plan": 0.2, "compute": 0.5, "check": 0.3}, "direct": {"compute": 0.9, "final": 0.1}}
    fig = plots.label_fractions(fr)
    by = {t.name: t for t in fig.data}
    assert list(by["cot"].x) == ["check", "compute", "final", "plan"]
    assert list(by["cot"].y) == [0.3, 0.5, 0.0, 0.2]
    assert list(by["direct"].y) == [0.0, 0.9, 0.1, 0.0]


class _Scripts(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.inline = 0

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            src = dict(attrs).get("src")
            if src:
                self.srcs.append(src)
            else:
                self.inline += 1


def test_save_figure_writes_standalone_html(tmp_path, caplog):
    fig = plots.layer_sweep(LAYERS, {"auroc": AUROC}, best_layer=5)
    with caplog.at_level(logging.WARNING, logger="mechreason.report.plots"):
        written = plots.save_figure(fig, tmp_path / "sweep")
    html_path = tmp_path / "sweep.html"
    assert html_path in written
    text = html_path.read_text()
    p = _Scripts()
    p.feed(text)
    assert p.srcs == [] and p.inline >= 2  # plotly.js inline plus the figure's script
    assert len(text) > 1_000_000  # the plotly.js bundle is inside
    reason = plots.png_support()
    if os.environ.get("MECHREASON_REQUIRE_CHROMIUM") == "1":  # CI installs Chromium (and setup kaleido)
        assert reason is None, reason
    if reason is None:
        png = (tmp_path / "sweep.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        width, height = struct.unpack(">II", png[16:24])
        assert (width, height) == (700, 500)  # plotly's default image size
        assert len(png) > 10_000  # axes, ticks and the curve, not a blank canvas
    else:
        assert "PNG export is off" in reason
        assert "pip install kaleido" in reason or "Chromium" in reason
        assert not (tmp_path / "sweep.png").exists()


def test_figure_div_has_no_plotlyjs():
    div = plots.figure_div(plots.feature_ranking([1, 2], [0.5, 0.25]), div_id="f1")
    assert 'id="f1"' in div and len(div) < 50_000
    assert "Plotly.newPlot" in div
