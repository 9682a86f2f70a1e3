"""Thought anchors, stage 6: the trace view, one offline HTML file (Bogdan, Macar, Nanda,
Conmy 2025; modelled on the thought-anchors.com viewer).

The page lists the trace's sentences in order, each coloured by an importance measure
(chosen in the page; the resampling accuracy change shows its 95% interval), with its
function tags; hovering or clicking a sentence lists the later sentences it most affects
by the resampling sentence-to-sentence matrix and by the attention-suppression matrix,
whichever were run, and outlines them in the list. Everything is inline (no server, no
network, no plotly): the data as JSON in a ``<script type="application/json">`` and a
small script that renders it. Once that script has run without throwing, ``<body>``
gets ``data-ok="1"`` and the title loses its "(loading)" suffix, so a headless browser
can tell a page that worked from one that did not.

:func:`view_data` reads an anchors directory (``table.json``, plus ``resampling.json``
and ``suppression.safetensors`` when present); :func:`render_view` makes the page;
:func:`write_view` writes ``<anchors dir>/view.html``.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechreason.artifacts import (
    ANCHORS_TABLE_JSON,
    META_JSON,
    RESAMPLING_JSON,
    SUPPRESSION_FILE,
    VIEW_HTML,
    atomic_path,
    read_json,
)
from mechreason.errors import MechReasonError
from mechreason.stats import wilson

TOP_AFFECTED = 5
"""How many affected sentences the page lists per source sentence and matrix."""
METRICS = {  # table column -> what the page calls it; the first present colours the page
    "counterfactual_kl_laplace": "counterfactual importance (KL, Laplace-smoothed: graded)",
    "counterfactual_kl": "counterfactual importance (KL, eps = 1e-9 as in the scripts)",
    "resampling_accuracy": "resampling importance (accuracy change)",
    "resampling_kl": "resampling importance (KL)",
    "counterfactual_accuracy": "counterfactual importance (accuracy change)",
    "forced_importance_kl": "forced-answer importance (KL)",
    "suppression_out": "attention suppression (mean log-KL on later sentences)",
    "receiver_score": "receiver-head score",
}


def view_data(anchors_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything the page shows, read from an anchors directory."""
    root = Path(anchors_dir)
    if not (root / ANCHORS_TABLE_JSON).is_file():
        raise MechReasonError(f"no table.json in {str(root)!r}: not an anchors directory "
                              "(mechreason anchors writes one)")
    rows = read_json(root / ANCHORS_TABLE_JSON).get("rows") or []
    n = len(rows)
    affects: dict[str, list[list[list[float]]]] = {}
    res = root / RESAMPLING_JSON
    imp = read_json(res) if res.is_file() else {}
    if imp.get("matrix"):
        affects["resampling"] = top_affected(imp["matrix"], n, positive_only=True)
    sup = root / SUPPRESSION_FILE
    if sup.is_file():
        from safetensors.torch import load_file

        affects["suppression"] = top_affected(load_file(str(sup))["matrix"].tolist(), n)
    metrics = [m for m in METRICS if n and any(r.get(m) is not None for r in rows)]
    meta = read_json(root / META_JSON) if (root / META_JSON).is_file() else {}
    return {
        "trace_id": str(meta.get("trace_id", "")),
        "model": (meta.get("model") or {}).get("name", ""),
        "sentences": [{"idx": i, "text": r.get("text", ""), "tags": list(r.get("labels") or []),
                       **{m: r.get(m) for m in metrics}} for i, r in enumerate(rows)],
        "metrics": [[m, METRICS[m]] for m in metrics],
        "intervals": {"resampling_accuracy": accuracy_intervals(imp)} if imp.get("accuracy")
        else {},
        "affects": affects,
        "top": TOP_AFFECTED,
    }


def top_affected(matrix: Sequence[Sequence[float | None]], n: int, k: int = TOP_AFFECTED, *,
                 positive_only: bool = False) -> list[list[list[float]]]:
    """Per source sentence i, up to ``k`` pairs ``[j, score]`` over later sentences j,
    highest score first (ties to the earlier j); NaN dropped, and scores <= 0 too with
    ``positive_only`` (resampling: 0 is no effect)."""
    if len(matrix) != n:
        raise MechReasonError(f"a {len(matrix)}-row matrix for {n} sentences")
    out = []
    for i in range(n):
        pairs = [(j, float(v)) for j in range(i + 1, n)
                 if (v := matrix[i][j]) is not None and math.isfinite(float(v))
                 and (float(v) > 0 or not positive_only)]
        pairs.sort(key=lambda p: (-p[1], p[0]))
        out.append([[j, v] for j, v in pairs[:k]])
    return out


def accuracy_intervals(imp: dict[str, Any]) -> list[list[float] | None]:
    """95% intervals of the resampling accuracy change ``acc(R_{i+1}) - acc(R_i)``:
    Newcombe's hybrid score interval from the two Wilson intervals; ``R_N`` is the
    trace itself (a point mass), so the last sentence has one random side."""
    acc, n_roll = imp["accuracy"], imp.get("n_rollouts") or []
    out: list[list[float] | None] = []
    for i, (a, m) in enumerate(zip(acc, n_roll)):
        diff = imp["resampling_accuracy"][i]
        if a is None or diff is None or m == 0 or (i + 1 < len(acc) and n_roll[i + 1] == 0):
            out.append(None)
            continue
        p1, p2 = a + diff, a  # keep-sentence accuracy, resampled accuracy
        lo2, hi2 = wilson(round(p2 * m), m)
        lo1, hi1 = (wilson(round(p1 * n_roll[i + 1]), n_roll[i + 1]) if i + 1 < len(acc)
                    else (p1, p1))
        out.append([diff - math.hypot(p1 - lo1, hi2 - p2), diff + math.hypot(hi1 - p1, p2 - lo2)])
    return out


def render_view(data: dict[str, Any], *, title: str | None = None) -> str:
    """The page as one HTML string (see the module docstring)."""
    title = title or f"Thought anchors: trace {data.get('trace_id') or '?'}"
    # "</" would end the script element early; JSON allows "\/" for "/"
    blob = json.dumps(_finite(data), allow_nan=False).replace("</", "<\\/")
    return (f"<!DOCTYPE html><html><head><meta charset=utf-8>"
            f"<title>{html.escape(title)} (loading)</title><style>{_CSS}</style></head>"
            f"<body data-ok=0><h1>{html.escape(title)}</h1>"
            f"<p class=sub id=sub></p><div id=controls></div>"
            f"<div id=main><ol id=sentences></ol><aside id=panel></aside></div>"
            f"<noscript>This view needs JavaScript; the data is in table.json.</noscript>"
            f"<script type=\"application/json\" id=data>{blob}</script>"
            f"<script>{_JS}</script></body></html>")


def write_view(anchors_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None
               ) -> Path:
    """Write the page for ``anchors_dir`` (default: ``<anchors_dir>/view.html``)."""
    data = view_data(anchors_dir)
    path = Path(out) if out is not None else Path(anchors_dir) / VIEW_HTML
    with atomic_path(path) as tmp:
        tmp.write_text(render_view(data))
    return path


def _finite(obj: Any) -> Any:
    """NaN / inf -> None, so the page's JSON is valid."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.4em;margin:.2em 0} .sub{color:#666;margin:.2em 0 .8em}
#controls{margin:.5em 0 1em} #controls select{font-size:1em;margin:0 .5em}
.legend{display:inline-block;vertical-align:middle;width:160px;height:12px;border:1px solid #ccc;
 background:linear-gradient(90deg,rgba(33,102,172,.85),#fff,rgba(214,96,77,.85))}
#main{display:flex;gap:1.2em;align-items:flex-start}
#sentences{flex:1 1 auto;list-style:none;padding:0;margin:0}
#sentences li{padding:.35em .6em;margin:.2em 0;border-radius:4px;border:2px solid transparent;cursor:pointer;line-height:1.4}
#sentences li.sel{border-color:#222} #sentences li.hit{border-color:#e08e0b;border-style:dashed}
.idx{display:inline-block;min-width:2.2em;color:#555;font-variant-numeric:tabular-nums}
.tag{display:inline-block;font-size:.72em;padding:0 .45em;margin-left:.3em;border-radius:.8em;background:#eef;color:#335;border:1px solid #ccd}
.val{float:right;font-size:.8em;color:#333;margin-left:1em;font-variant-numeric:tabular-nums}
#panel{flex:0 0 330px;position:sticky;top:1em;background:#fafafa;border:1px solid #ddd;border-radius:6px;padding:.6em .9em;font-size:.9em}
#panel h3{font-size:1em;margin:.6em 0 .3em} #panel ol{padding-left:1.4em;margin:.2em 0}
#panel .none{color:#888}
"""

_JS = r"""
(function () {
  window.addEventListener("error", function (e) { document.body.dataset.error = String(e.message); });
  try {
    var D = JSON.parse(document.getElementById("data").textContent);
    var S = D.sentences, list = document.getElementById("sentences"), panel = document.getElementById("panel");
    var metric = D.metrics.length ? D.metrics[0][0] : null, selected = null;
    function el(tag, cls, text) { var e = document.createElement(tag); if (cls) e.className = cls;
      if (text !== undefined) e.textContent = text; return e; }
    function fmt(v) { return v === null || v === undefined ? "n/a" : (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3)); }
    function colour(v, scale) {
      if (v === null || v === undefined || !scale) return "#f4f4f4";
      var a = Math.min(Math.abs(v) / scale, 1) * 0.85;
      return v >= 0 ? "rgba(214,96,77," + a.toFixed(3) + ")" : "rgba(33,102,172," + a.toFixed(3) + ")";
    }
    var sub = [S.length + " sentences"];
    if (D.model) sub.unshift("model " + D.model);
    sub.push("matrices: " + (Object.keys(D.affects).join(", ") || "none"));
    document.getElementById("sub").textContent = sub.join(" \u00b7 ");
    var controls = document.getElementById("controls");
    if (D.metrics.length) {
      controls.appendChild(el("span", null, "colour by"));
      var sel = el("select"); sel.id = "metric";
      D.metrics.forEach(function (m) { var o = el("option", null, m[1]); o.value = m[0]; sel.appendChild(o); });
      sel.addEventListener("change", function () { metric = sel.value; paint(); });
      controls.appendChild(sel);
      controls.appendChild(el("span", "legend"));
      controls.appendChild(el("span", null, " negative \u2194 positive; hover or click a sentence"));
    } else { controls.textContent = "no importance measure in table.json"; }
    var items = S.map(function (s) {
      var li = el("li"); li.id = "s" + s.idx; li.dataset.idx = s.idx;
      li.appendChild(el("span", "val"));
      li.appendChild(el("span", "idx", s.idx));
      li.appendChild(el("span", "text", s.text));
      s.tags.forEach(function (t) { li.appendChild(el("span", "tag", t)); });
      li.addEventListener("mouseenter", function () { show(s.idx); });
      li.addEventListener("click", function () { selected = selected === s.idx ? null : s.idx; show(s.idx); });
      list.appendChild(li);
      return li;
    });
    list.addEventListener("mouseleave", function () { show(selected); });
    function paint() {
      var vals = S.map(function (s) { return metric ? s[metric] : null; });
      var scale = Math.max.apply(null, vals.map(function (v) { return v === null || v === undefined ? 0 : Math.abs(v); }));
      var iv = D.intervals[metric] || null;
      items.forEach(function (li, i) {
        li.style.background = colour(vals[i], scale);
        var t = metric ? fmt(vals[i]) : "";
        if (iv && iv[i]) t += " [" + fmt(iv[i][0]) + ", " + fmt(iv[i][1]) + "]";
        li.firstChild.textContent = t;
        li.title = metric ? metric + " = " + t : "";
      });
    }
    function show(i) {
      items.forEach(function (li) { li.classList.remove("sel", "hit"); });
      panel.textContent = "";
      if (i === null || i === undefined) {
        panel.appendChild(el("p", "none", "Hover or click a sentence to see the later sentences it most affects."));
        return;
      }
      items[i].classList.add("sel");
      panel.appendChild(el("h3", null, "Sentence " + i + " most affects"));
      var names = Object.keys(D.affects);
      if (!names.length) panel.appendChild(el("p", "none", "no resampling or suppression matrix in this run"));
      names.forEach(function (name) {
        var h = el("h3", null, name === "resampling" ? "by resampling (reappearance rate change)" : "by attention suppression (log-KL)");
        panel.appendChild(h);
        var rows = D.affects[name][i] || [];
        if (!rows.length) { panel.appendChild(el("p", "none", "no later sentence")); return; }
        var ol = el("ol"); ol.dataset.matrix = name;
        rows.forEach(function (p) {
          var li = el("li", null, "#" + p[0] + " (" + fmt(p[1]) + "): " + S[p[0]].text.slice(0, 90));
          li.dataset.target = p[0]; ol.appendChild(li); items[p[0]].classList.add("hit");
        });
        panel.appendChild(ol);
      });
    }
    paint();
    var m = /^#s=?(\d+)$/.exec(location.hash);
    selected = m && +m[1] < S.length ? +m[1] : null;
    show(selected);
    document.body.dataset.ok = "1";
    document.title = document.title.replace(/ \(loading\)$/, "");
  } catch (e) {
    document.body.dataset.error = String(e && e.stack || e);
  }
})();
"""
