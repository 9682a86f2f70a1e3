"""Report: one self-contained, offline HTML page for a run directory.

Reads whatever stage artifacts the run directory holds (file names in
:data:`mechreason.report.stages.STAGES`, documented in docs/report.md), draws the
figures of :mod:`mechreason.report.plots`, lists the key numbers with their 95% intervals and
links to the raw artifacts, and shows a visible "not run / missing" section for every
stage that is absent. plotly.js is embedded once, inline, so the page works with no
network (no CDN). The pipeline it reports is the one of Venhoff et al. 2025a/b,
He et al. 2026 and Bogdan et al. 2025 (Thought Anchors); see docs/index.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import html
import json
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

from mechreason import artifacts as A
from mechreason.errors import MechReasonError
from mechreason.report.stages import (
    RUN_SUMMARY,
    STAGES,
    Number,
    Section,
    read_json_file,
    read_stage,
)

log = logging.getLogger(__name__)

REPORT_HTML = A.REPORT_HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.status{font-size:.7em;padding:.15em .5em;border-radius:.3em;margin-left:.5em;vertical-align:middle;color:#fff}
.status.ok{background:#2a9d50}.status.missing,.status.skipped{background:#999}
.status.not-available{background:#b07d00}.status.failed,.status.error{background:#c0392b}
.reason{background:#f6f6f6;border-left:4px solid #bbb;padding:.5em 1em}
table{border-collapse:collapse;margin:.5em 0} td,th{border-bottom:1px solid #eee;padding:.25em .8em;text-align:left}
td.num{font-variant-numeric:tabular-nums} .tok{border-radius:2px}
.latent-example{font-family:monospace;white-space:pre-wrap;margin:.2em 0;padding:.2em;border-bottom:1px dotted #ddd}
pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em} nav a{margin-right:1em}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else f"{v:.4g}"
    return html.escape(str(v))


def _numbers_table(numbers: list[Number]) -> str:
    if not numbers:
        return ""
    rows = []
    for n in numbers:
        ci = f"[{_fmt(n.lo)}, {_fmt(n.hi)}]" if n.lo is not None and n.hi is not None else ""
        rows.append(f"<tr><td>{html.escape(n.name)}</td><td class=num>{_fmt(n.value)}</td>"
                    f"<td class=num>{ci}</td><td>{html.escape(n.note)}</td></tr>")
    return ("<table class=numbers><tr><th>quantity</th><th>value</th><th>95% interval</th><th></th></tr>"
            + "".join(rows) + "</table>")


def _links(paths: list[Path], run_dir: Path) -> str:
    if not paths:
        return ""
    items = []
    for p in paths:
        rel = os.path.relpath(p, run_dir)
        items.append(f'<a href="{html.escape(rel)}">{html.escape(rel)}</a>')
    return "<p>Raw artifacts: " + " · ".join(items) + "</p>"


def _config(cfg: dict[str, Any]) -> str:
    if not cfg:
        return ""
    text = json.dumps(cfg, indent=1, default=str)
    return f"<details><summary>configuration</summary><pre>{html.escape(text)}</pre></details>"


def render_section(sec: Section, run_dir: Path) -> str:
    """One stage's HTML: heading with status, reason, numbers, figures, snippets, links."""
    from mechreason.report.plots import figure_div

    status_cls = sec.status.replace(" ", "-")
    label = "not run" if sec.status == "missing" else sec.status
    parts = [f'<section id="{sec.key}" data-stage="{sec.key}" data-status="{html.escape(sec.status)}">',
             f'<h2>{html.escape(sec.title)}<span class="status {status_cls}">{html.escape(label)}</span></h2>']
    if sec.reason:
        parts.append(f'<p class="reason">{html.escape(sec.reason)}</p>')
    parts.append(_numbers_table(sec.numbers))
    parts += [figure_div(fig, div_id=f"fig-{sec.key}-{i}") for i, fig in enumerate(sec.figures)]
    parts += sec.snippets
    parts.append(_config(sec.config))
    parts.append(_links(sec.links, run_dir))
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def _run_header(run_dir: Path, summary: dict[str, Any]) -> str:
    meta = _first_meta(run_dir)
    info: dict[str, Any] = {k: summary[k] for k in ("model", "quick", "seed", "elapsed_s") if k in summary}
    if meta:
        info |= {"mechreason": meta.get("mechreason_version"), "git commit": meta.get("git_commit"),
                 "libraries": meta.get("libraries"), "model weights": meta.get("model")}
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v) if not isinstance(v, dict) else html.escape(json.dumps(v))}</td></tr>"
                   for k, v in info.items() if v is not None)
    figures = summary.get("figures") or {}
    key = "".join(f"<tr><td>{html.escape(k)}</td><td class=num>{_fmt(v)}</td></tr>" for k, v in figures.items()
                  if not isinstance(v, (dict, list)))
    parts = ['<section id="run"><h2>What was run</h2>', f"<table>{rows}</table>" if rows else
             "<p class=reason>no summary.json or meta.json: run details unknown</p>"]
    if key:
        parts.append(f"<h3>Key figures (summary.json)</h3><table>{key}</table>")
    stages = summary.get("stages") or {}
    if stages:
        srows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v.get('status')))}</td>"
                        f"<td class=num>{_fmt(v.get('seconds', ''))}</td><td>{html.escape(str(v.get('reason', '')))}</td></tr>"
                        for k, v in stages.items())
        parts.append(f"<h3>Stages</h3><table><tr><th>stage</th><th>status</th><th>seconds</th>"
                     f"<th>note</th></tr>{srows}</table>")
    parts.append("</section>")
    return "\n".join(parts)


def _first_meta(run_dir: Path) -> dict[str, Any]:
    for spec in STAGES.values():
        for d in spec.dirs:
            p = run_dir / d / A.META_JSON
            if p.is_file():
                try:
                    return dict(read_json_file(p))
                except MechReasonError:
                    continue
    return {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportConfig:
    """What report to build."""

    run_dir: Path
    """The run directory (stage sub-directories, summary.json)."""
    out: Path | None = None
    """Where to write the page (default: RUN_DIR/report.html)."""
    figures_dir: Path | None = None
    """Also save each figure as standalone HTML (and PNG where possible) here (None: don't)."""
    title: str = "mechreason report"
    """Page title."""

    def __post_init__(self) -> None:
        if not Path(self.run_dir).is_dir():
            raise MechReasonError(f"run directory {str(self.run_dir)!r} does not exist")


def collect(run_dir: Path) -> tuple[dict[str, Any], list[Section]]:
    """The run summary and one section per stage of :data:`STAGES`, in pipeline order."""
    run_dir = Path(run_dir)
    summary_path = run_dir / RUN_SUMMARY
    summary: dict[str, Any] = {}
    if summary_path.is_file():
        summary = dict(read_json_file(summary_path))
    return summary, [read_stage(run_dir, key, summary) for key in STAGES]


class ReportResult(NamedTuple):
    """The written page and the sections it shows."""

    path: Path
    sections: list[Section]


def build_report(cfg: ReportConfig) -> ReportResult:
    """Write the report page; return its path and sections."""
    from mechreason.artifacts import atomic_path
    from mechreason.report.plots import plotly_js, save_figure

    run_dir = Path(cfg.run_dir)
    summary, sections = collect(run_dir)
    out = Path(cfg.out) if cfg.out else run_dir / REPORT_HTML
    nav = " ".join(f'<a href="#{s.key}">{html.escape(s.title)}</a>' for s in sections)
    body = [_run_header(run_dir, summary), *(render_section(s, out.parent) for s in sections)]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = (f"<!DOCTYPE html><html><head><meta charset=utf-8><title>{html.escape(cfg.title)}</title>"
            f"<style>{_CSS}</style><script type=\"text/javascript\">{plotly_js()}</script></head><body>"
            f"<h1>{html.escape(cfg.title)}</h1><p>{html.escape(str(run_dir))} · built {stamp}</p>"
            f"<nav>{nav}</nav>" + "\n".join(body) + "</body></html>")
    with atomic_path(out) as tmp:
        tmp.write_text(page)
    if cfg.figures_dir is not None:
        for s in sections:
            for i, fig in enumerate(s.figures):
                save_figure(fig, Path(cfg.figures_dir) / f"{s.key}_{i}")
    log.info("report written to %s (%d of %d stages present)", out,
             sum(s.status == "ok" for s in sections), len(sections))
    return ReportResult(out, sections)
