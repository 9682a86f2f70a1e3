"""The thought-anchors trace view: the data it shows (against planted matrices and a
hand-computed interval), and the page itself in headless Chromium (it runs without a
script error, shows every sentence, lists the planted most-affected sentences, and a
screenshot is kept)."""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

from mechreason.anchors.view import (
    VIEW_HTML,
    accuracy_intervals,
    render_view,
    top_affected,
    view_data,
    write_view,
)
from mechreason.errors import MechReasonError
from mechreason.stats import wilson

N = 7
TEXTS = [f"Sentence number {i} says something {'long ' * (i % 4)}about the sum." for i in range(N)]
TEXTS[3] = 'Tricky </script><b>bold</b> & "quoted" text.'  # must show literally, not as markup
TAGS = ["problem_setup", "plan_generation", "active_computation", "uncertainty_management"]
# planted: sentence 1 most affects 5 by resampling, 6 by suppression
RES = [[0.0] * N for _ in range(N)]
RES[1][5], RES[1][2], RES[1][4], RES[2][6] = 0.9, 0.4, -0.3, 0.2
SUP = torch.full((N, N), float("nan"))
for i in range(N):
    for j in range(i + 1, N):
        SUP[i, j] = -5.0 + 0.1 * j
SUP[1, 6] = 2.0


def write_anchors_dir(d: Path) -> Path:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    cf = [0.05, 0.8, 0.1, 0.0, 0.3, 0.02, 0.01]
    rows = [{"idx": i, "text": TEXTS[i], "labels": [TAGS[i % 4]] + (["self_checking"] if i == 2 else []),
             "counterfactual_kl": cf[i], "resampling_accuracy": 0.1 * (i - 3),
             "suppression_out": None if i == N - 1 else 0.5} for i in range(N)]
    (d / "table.json").write_text(json.dumps({"rows": rows, "rank_correlations": []}))
    imp = {"accuracy": [0.5] * N, "resampling_accuracy": [0.1 * (i - 3) for i in range(N)],
           "n_rollouts": [8] * N, "matrix": RES}
    (d / "resampling.json").write_text(json.dumps(imp))
    save_file({"matrix": SUP}, str(d / "suppression.safetensors"))
    (d / "meta.json").write_text(json.dumps({"trace_id": "t7", "model": {"name": "tiny-random"}}))
    return d


def test_top_affected_planted():
    top = top_affected(RES, N, positive_only=True)
    assert top[1] == [[5, 0.9], [2, 0.4]]  # the negative and zero entries dropped
    assert top[2] == [[6, 0.2]] and top[N - 1] == []
    sup = top_affected(SUP.tolist(), N, k=3)
    assert sup[1] == [[6, 2.0], [5, pytest.approx(-4.5)], [4, pytest.approx(-4.6)]]
    assert sup[0][0][0] == 6 and all(len(r) <= 3 for r in sup)
    with pytest.raises(MechReasonError, match="3-row matrix for 7"):
        top_affected(RES[:3], N)


@pytest.mark.parametrize(("acc_keep", "acc_res", "n"), [(0.75, 0.25, 8), (0.5, 0.5, 4), (1.0, 0.0, 16)])
def test_accuracy_interval_is_newcombe(acc_keep, acc_res, n):
    """Sentence 0's interval equals Newcombe's hybrid score interval computed by hand;
    the last sentence (kept = the trace itself, a point mass) has only one random side."""
    imp = {"accuracy": [acc_res, acc_keep], "resampling_accuracy": [acc_keep - acc_res, 1 - acc_keep],
           "n_rollouts": [n, n]}
    lo1, hi1 = wilson(round(acc_keep * n), n)
    lo2, hi2 = wilson(round(acc_res * n), n)
    d = acc_keep - acc_res
    want = [d - math.sqrt((acc_keep - lo1) ** 2 + (hi2 - acc_res) ** 2),
            d + math.sqrt((hi1 - acc_keep) ** 2 + (acc_res - lo2) ** 2)]
    got = accuracy_intervals(imp)
    assert got[0] == pytest.approx(want)
    assert got[0][0] <= d <= got[0][1]
    lo, hi = wilson(round(acc_keep * n), n)
    assert got[1] == pytest.approx([1 - acc_keep - (hi - acc_keep), 1 - acc_keep + (acc_keep - lo)])


def test_view_data_reads_the_directory(tmp_path):
    d = view_data(write_anchors_dir(tmp_path / "anchors"))
    assert [s["text"] for s in d["sentences"]] == TEXTS
    assert d["sentences"][2]["tags"] == ["active_computation", "self_checking"]
    assert [m for m, _ in d["metrics"]] == ["counterfactual_kl", "resampling_accuracy",
                                            "suppression_out"]
    assert d["affects"]["resampling"][1][0] == [5, 0.9]
    assert d["affects"]["suppression"][1][0] == [6, 2.0]
    assert len(d["intervals"]["resampling_accuracy"]) == N
    assert (d["trace_id"], d["model"]) == ("t7", "tiny-random")
    with pytest.raises(MechReasonError, match=r"no table\.json"):
        view_data(tmp_path / "nowhere")


def test_page_is_one_offline_file(tmp_path):
    page = write_view(write_anchors_dir(tmp_path / "a")).read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # nothing fetched
    assert page.count("<script") == 2 and "</script><b>" not in page  # the text cannot end it
    assert "NaN" not in page  # a NaN would make the JSON invalid


def _chromium() -> str:
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("MECHREASON_REQUIRE_CHROMIUM") == "1":
            pytest.fail("MECHREASON_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH (apt install chromium)")
    return browser


def _browser(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
           "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


class Dom(HTMLParser):
    """The rendered sentence items, the side panel's lists, and the body's attributes."""

    def __init__(self):
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.items: dict[int, dict] = {}
        self.panel: dict[str, list[int]] = {}
        self._in: list = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "li" and (a.get("id") or "").startswith("s"):
            idx = int(a["data-idx"])
            self.items[idx] = {"class": a.get("class") or "", "style": a.get("style") or "",
                               "text": "", "tags": []}
            self._in = ["item", idx]
        elif tag == "span" and a.get("class") in ("text", "tag") and self._in[:1] == ["item"]:
            self._in = ["item", self._in[1], a["class"]]
        elif tag == "ol" and a.get("data-matrix"):
            self.panel[a["data-matrix"]] = []
            self._in = ["panel", a["data-matrix"]]
        elif tag == "li" and a.get("data-target") and self._in[:1] == ["panel"]:
            self.panel[self._in[1]].append(int(a["data-target"]))

    def handle_endtag(self, tag):
        if tag == "span" and len(self._in) == 3:
            self._in = self._in[:2]

    def handle_data(self, data):
        if len(self._in) == 3:
            item = self.items[self._in[1]]
            if self._in[2] == "text":
                item["text"] += data
            else:
                item["tags"].append(data)


def _alpha(style: str) -> float:
    m = re.search(r"rgba\(214, 96, 77, ([\d.]+)\)", style)
    return float(m.group(1)) if m else 0.0


def test_view_renders_in_chromium(tmp_path):
    """The page's script runs to the end with no error (it sets data-ok only then), every
    sentence and tag is on the page, the colours follow the importance, and the sentence
    selected by the URL lists the planted most-affected sentences first."""
    page = write_view(write_anchors_dir(tmp_path / "anchors"))
    run = _browser(tmp_path, "--dump-dom", page.resolve().as_uri() + "#s1")
    dom = Dom()
    dom.feed(run.stdout)
    assert dom.body.get("data-ok") == "1", dom.body.get("data-error")
    assert "data-error" not in dom.body
    assert "Uncaught" not in run.stderr and "SyntaxError" not in run.stderr
    assert re.search(r"<title>Thought anchors: trace t7</title>", run.stdout)  # "(loading)" gone
    assert [dom.items[i]["text"] for i in range(N)] == TEXTS
    assert dom.items[2]["tags"] == ["active_computation", "self_checking"]
    alphas = [_alpha(dom.items[i]["style"]) for i in range(N)]
    assert max(range(N), key=alphas.__getitem__) == 1 and alphas[1] == pytest.approx(0.85)
    assert "sel" in dom.items[1]["class"]
    assert dom.panel["resampling"] == [5, 2] and dom.panel["suppression"][0] == 6
    assert {i for i in range(N) if "hit" in dom.items[i]["class"]} >= {2, 5, 6}


def test_view_screenshot(tmp_path):
    """A screenshot as a test artifact (kept in $MECHREASON_TEST_ARTIFACTS when set)."""
    page = write_view(write_anchors_dir(tmp_path / "anchors"))
    shot = tmp_path / "anchors_view.png"
    _browser(tmp_path, "--window-size=1280,800", f"--screenshot={shot}",
             page.resolve().as_uri() + "#s1")
    head = shot.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", head[16:24]) == (1280, 800)
    assert shot.stat().st_size > 20_000  # text and colours, not a blank page
    keep = os.environ.get("MECHREASON_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


def test_report_embeds_the_view(tmp_path):
    from mechreason.report.html import ReportConfig, build_report

    write_anchors_dir(tmp_path / "anchors")
    write_view(tmp_path / "anchors")
    out, _ = build_report(ReportConfig(run_dir=tmp_path))
    text = out.read_text()
    frame = re.search(r'<iframe class="trace-view"[^>]* srcdoc="([^"]*)"', text)
    assert frame, "no trace view in the report"
    inner = html.unescape(frame.group(1))
    assert inner == render_view(view_data(tmp_path / "anchors"))
    assert f'href="anchors/{VIEW_HTML}"' in text


def test_the_graded_importance_colours_the_page_when_present(tmp_path):
    """A table with the Laplace-smoothed counterfactual KL (graded, never at a ceiling)
    lists it first, so the page opens coloured by it rather than by the eps = 1e-9 KL."""
    d = write_anchors_dir(tmp_path / "anchors")
    table = json.loads((d / "table.json").read_text())
    for r in table["rows"]:
        r["counterfactual_kl_laplace"] = r["counterfactual_kl"] / 2
    (d / "table.json").write_text(json.dumps(table))
    metrics = [m for m, _ in view_data(d)["metrics"]]
    assert metrics[:2] == ["counterfactual_kl_laplace", "counterfactual_kl"]
