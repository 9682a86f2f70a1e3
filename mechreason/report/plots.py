"""Plots: one small function per figure of the report (the only module importing plotly).

Every function takes plain data (lists, dicts, or anything with ``tolist()`` such as a
tensor or array), documented in its docstring, and returns a :class:`plotly Figure
<plotly.graph_objects.Figure>` whose traces hold exactly that data, so the report and
the tests can read numbers back from the figure. Figures follow the papers they
illustrate: layer sweeps of a reasoning direction (Venhoff et al. 2025a), first-token
steering dose-response with a random control (He et al. 2026), SAE training and
feature ranking (ReasonScore, Galichin et al. 2025), and thought anchors' sentence
importance, attention suppression and receiver heads (Bogdan et al. 2025).

:func:`save_figure` writes standalone HTML with plotly.js embedded (works offline) and
a PNG where kaleido and a Chromium are installed; :func:`png_support` says why not.
"""

from __future__ import annotations

import html
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechreason.errors import MechReasonError

log = logging.getLogger(__name__)

# One colour per label / role, stable across figures (plotly's qualitative palette).
PALETTE = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
           "#b6e880", "#ff97ff", "#fecb52")
CONTROL_COLOR = "#7f7f7f"
_LAYOUT: dict[str, Any] = {"template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 50}}


def _list(x: Any) -> list[Any]:
    """Tensors, arrays, tuples -> plain lists (nested for 2-D)."""
    return x.tolist() if hasattr(x, "tolist") else list(x)


def _check_len(name: str, xs: Sequence[Any], n: int) -> None:
    if len(xs) != n:
        raise MechReasonError(f"{name} has {len(xs)} values but there are {n} points")


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def color_for(label: str, labels: Sequence[str]) -> str:
    """The colour of ``label`` among ``labels`` (sorted order, so it is stable)."""
    order = sorted(set(labels))
    return PALETTE[order.index(label) % len(PALETTE)] if label in order else CONTROL_COLOR


def layer_sweep(layers: Sequence[int], metrics: Mapping[str, Sequence[float]], *,
                best_layer: int | None = None, title: str = "Direction separation by layer") -> go.Figure:
    """Separation of a direction per layer.

    layers: the layer indices swept. metrics: metric name (e.g. ``"auroc"``,
    ``"accuracy"``) -> one value per layer. best_layer: marked with a vertical line and
    a star on the first metric (None: not marked).
    """
    layers = _list(layers)
    fig = go.Figure()
    for name, values in metrics.items():
        values = _list(values)
        _check_len(name, values, len(layers))
        fig.add_trace(go.Scatter(x=layers, y=values, mode="lines+markers", name=name))
    if best_layer is not None and metrics:
        if best_layer not in layers:
            raise MechReasonError(f"best_layer {best_layer} is not among the swept layers {layers}")
        values = next(iter(metrics.values()))
        y = _list(values)[layers.index(best_layer)]
        fig.add_trace(go.Scatter(x=[best_layer], y=[y], mode="markers", name=f"best layer {best_layer}",
                                 marker={"symbol": "star", "size": 16, "color": "black"}))
        fig.add_vline(x=best_layer, line_dash="dot", line_color="black")
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="held-out separation", **_LAYOUT)
    return fig


def _band(fig: go.Figure, x: list[Any], lo: list[float], hi: list[float], color: str, name: str) -> None:
    fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", name=f"{name} CI",
                             fillcolor=_rgba(color, 0.2), line={"width": 0}, hoverinfo="skip",
                             showlegend=False))


def dose_response(coefs: Sequence[float], mean: Sequence[float], lo: Sequence[float],
                  hi: Sequence[float], *, control: Mapping[str, Sequence[float]] | None = None,
                  metric: str = "metric", title: str = "Steering dose-response") -> go.Figure:
    """A steering metric against the steering coefficient, with confidence bands.

    coefs: coefficients (x). mean, lo, hi: the metric's mean and CI bounds per
    coefficient. control: the same for a random direction of equal norm, as a dict with
    keys ``coefs``, ``mean``, ``lo``, ``hi`` (None: no control drawn).
    """
    arms = [("steered", PALETTE[0], _list(coefs), _list(mean), _list(lo), _list(hi))]
    if control is not None:
        missing = {"coefs", "mean", "lo", "hi"} - set(control)
        if missing:
            raise MechReasonError(f"control is missing keys {sorted(missing)}; needs coefs, mean, lo, hi")
        arms.append(("random control", CONTROL_COLOR, _list(control["coefs"]), _list(control["mean"]),
                     _list(control["lo"]), _list(control["hi"])))
    fig = go.Figure()
    for name, color, x, m, low, high in arms:
        for key, v in (("mean", m), ("lo", low), ("hi", high)):
            _check_len(f"{name} {key}", v, len(x))
        _band(fig, x, low, high, color, name)
        fig.add_trace(go.Scatter(x=x, y=m, mode="lines+markers", name=name, line={"color": color}))
    fig.update_layout(title=title, xaxis_title="steering coefficient", yaxis_title=metric, **_LAYOUT)
    return fig


def sae_training_curves(steps: Sequence[int], curves: Mapping[str, Sequence[float]], *,
                        title: str = "SAE training") -> go.Figure:
    """SAE training curves, one panel per curve.

    steps: the training step (or token count) of each logged point. curves: name (e.g.
    ``"mse"``, ``"l0"``, ``"dead_fraction"``, ``"explained_variance"``) -> one value per step.
    """
    steps = _list(steps)
    names = list(curves)
    if not names:
        raise MechReasonError("sae_training_curves needs at least one curve")
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=names)
    for i, name in enumerate(names, start=1):
        values = _list(curves[name])
        _check_len(name, values, len(steps))
        fig.add_trace(go.Scatter(x=steps, y=values, mode="lines", name=name), row=i, col=1)
    fig.update_layout(title=title, height=220 * len(names) + 80, showlegend=False, **_LAYOUT)
    fig.update_xaxes(title_text="step", row=len(names), col=1)
    return fig


def feature_ranking(features: Sequence[int], scores: Sequence[float], *, top: int = 20,
                    score_name: str = "score", title: str = "Top SAE features") -> go.Figure:
    """Bar chart of the ``top`` highest-scoring SAE latents (input order is kept).

    features: latent indices, best first. scores: one score per latent (e.g. mean
    CoT-minus-direct activation, ReasonScore).
    """
    features, scores = _list(features), _list(scores)
    _check_len("scores", scores, len(features))
    features, scores = features[:top], scores[:top]
    fig = go.Figure(go.Bar(x=[f"#{f}" for f in features], y=scores, name=score_name,
                           customdata=features, marker_color=PALETTE[0]))
    fig.update_layout(title=title, xaxis_title="latent", yaxis_title=score_name, **_LAYOUT)
    return fig


def latent_examples_html(examples: Sequence[Mapping[str, Any]], *, latent: int | str,
                         max_act: float | None = None) -> str:
    """An HTML snippet of a latent's top-activating sentences, tokens shaded by activation.

    examples: dicts with ``tokens`` (list of token strings) and ``acts`` (one activation
    per token), optionally ``label`` (shown beside the sentence). max_act: the activation
    drawn at full intensity (None: the largest in ``examples``). Each token is a
    ``<span>`` with its activation in ``data-act`` and ``title``.
    """
    acts_all = [float(a) for ex in examples for a in _list(ex["acts"])]
    peak = max_act if max_act is not None else max([*acts_all, 0.0])
    rows = []
    for ex in examples:
        tokens, acts = list(ex["tokens"]), [float(a) for a in _list(ex["acts"])]
        _check_len("acts", acts, len(tokens))
        spans = []
        for tok, a in zip(tokens, acts):
            alpha = 0.0 if peak <= 0 else max(0.0, min(1.0, a / peak))
            spans.append(f'<span class="tok" data-act="{a:.4g}" title="{a:.4g}" '
                         f'style="background:rgba(239,85,59,{alpha:.3f})">{html.escape(tok)}</span>')
        label = f' <span class="lbl">[{html.escape(str(ex["label"]))}]</span>' if ex.get("label") else ""
        rows.append(f'<div class="latent-example">{"".join(spans)}{label}</div>')
    return (f'<div class="latent" data-latent="{html.escape(str(latent))}">'
            f"<h4>latent {html.escape(str(latent))}</h4>{''.join(rows)}</div>")


def _label_name(label: Any) -> str:
    if isinstance(label, (list, tuple)):
        return str(label[0]) if label else "unlabelled"
    return str(label) if label else "unlabelled"


def sentence_importance(importance: Sequence[float], labels: Sequence[Any], *,
                        texts: Sequence[str] | None = None, metric: str = "importance",
                        title: str = "Sentence importance along the trace",
                        intervals: Sequence[Sequence[float] | None] | None = None,
                        saturated: Sequence[bool] | None = None) -> go.Figure:
    """Importance of each sentence of a trace, as bars coloured by the sentence's label.

    importance: one value per sentence, in trace order. labels: one label per sentence
    (a string, or a list of tags whose first is used). texts: the sentences (hover text).
    intervals: per sentence ``[low, high]`` (a 95% interval), drawn as error bars.
    saturated: per sentence, whether the value sits at a smoothing ceiling (drawn hatched).
    One bar trace per label, with x the sentence indices holding that label.
    """
    importance = [float(v) for v in _list(importance)]
    n = len(importance)
    names = [_label_name(lab) for lab in labels]
    _check_len("labels", names, n)
    if texts is not None:
        _check_len("texts", list(texts), n)
    if intervals is not None:
        _check_len("intervals", list(intervals), n)
    if saturated is not None:
        _check_len("saturated", list(saturated), n)
    fig = go.Figure()
    for lab in sorted(set(names)):
        idx = [i for i, nm in enumerate(names) if nm == lab]
        hover = [texts[i][:160] for i in idx] if texts is not None else None
        bar: dict[str, Any] = {}
        if intervals is not None:
            iv = [intervals[i] or (importance[i], importance[i]) for i in idx]
            bar["error_y"] = {"type": "data", "symmetric": False,
                              "array": [max(float(b) - importance[i], 0.0) for i, (_, b) in zip(idx, iv)],
                              "arrayminus": [max(importance[i] - float(a), 0.0) for i, (a, _) in zip(idx, iv)]}
        if saturated is not None:
            bar["marker_pattern_shape"] = ["/" if saturated[i] else "" for i in idx]
        fig.add_trace(go.Bar(x=idx, y=[importance[i] for i in idx], name=lab, hovertext=hover,
                             marker_color=color_for(lab, names), **bar))
    fig.update_layout(title=title, xaxis_title="sentence", yaxis_title=metric, **_LAYOUT)
    return fig


def suppression_matrix(matrix: Any, *, title: str = "Attention suppression (KL)") -> go.Figure:
    """Heatmap of the attention-suppression matrix.

    matrix: square nested list (or 2-D tensor); entry [i][j] is the effect on sentence
    i (target, row) of suppressing attention to sentence j (source, column).
    """
    z = _list(matrix)
    if not z or any(len(r) != len(z[0]) for r in z):
        raise MechReasonError("suppression matrix must be a non-empty rectangular 2-D array")
    fig = go.Figure(go.Heatmap(z=z, colorscale="Viridis", colorbar={"title": "KL"}))
    fig.update_layout(title=title, xaxis_title="suppressed sentence (source)",
                      yaxis_title="affected sentence (target)", yaxis_autorange="reversed", **_LAYOUT)
    return fig


def receiver_kurtosis(kurtosis: Any, *, top_heads: Sequence[Sequence[int]] = (),
                      title: str = "Receiver-head kurtosis") -> go.Figure:
    """Heatmap of the kurtosis of each head's vertical attention scores, layer x head.

    kurtosis: 2-D (n_layers, n_heads); NaN where a layer was skipped. top_heads:
    ``(layer, head)`` pairs marked with an x (the selected receiver heads).
    """
    z = _list(kurtosis)
    if not z or any(len(r) != len(z[0]) for r in z):
        raise MechReasonError("kurtosis must be a non-empty rectangular 2-D array (layer x head)")
    fig = go.Figure(go.Heatmap(z=z, colorscale="Magma", colorbar={"title": "kurtosis"}))
    if top_heads:
        fig.add_trace(go.Scatter(x=[int(h[1]) for h in top_heads], y=[int(h[0]) for h in top_heads],
                                 mode="markers", name="receiver heads",
                                 marker={"symbol": "x", "color": "cyan", "size": 10}))
    fig.update_layout(title=title, xaxis_title="head", yaxis_title="layer", **_LAYOUT)
    return fig


def label_fractions(fractions: Mapping[str, Mapping[str, float]], *,
                    title: str = "Sentence label fractions by prompt style") -> go.Figure:
    """Grouped bars: fraction of sentences carrying each label, per prompt style.

    fractions: style (e.g. ``"cot"``, ``"direct"``) -> label -> fraction in [0, 1].
    One bar trace per style; x are the labels (union over styles, sorted), 0 where absent.
    """
    labels = sorted({lab for per in fractions.values() for lab in per})
    fig = go.Figure()
    for i, (style, per) in enumerate(fractions.items()):
        fig.add_trace(go.Bar(x=labels, y=[float(per.get(lab, 0.0)) for lab in labels], name=style,
                             marker_color=PALETTE[i % len(PALETTE)]))
    fig.update_layout(title=title, barmode="group", xaxis_title="label",
                      yaxis_title="fraction of sentences", **_LAYOUT)
    return fig


# --- output -------------------------------------------------------------------------


@cache
def png_support() -> str | None:
    """None when PNG export works here, else the reason and how to enable it."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return ("PNG export is off: the 'kaleido' package is not installed "
                "(pip install kaleido; it also needs a Chromium, e.g. apt install chromium "
                "or `plotly_get_chrome`). HTML figures are written regardless.")
    import shutil

    if os.environ.get("BROWSER_PATH") or any(
            shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome")):
        return None
    try:  # kaleido >= 1 may have downloaded its own Chrome.
        import choreographer.browsers.chromium as chromium  # type: ignore[import-not-found]

        if chromium.Chromium.find_browser(skip_local=False):  # pragma: no cover - env-specific
            return None
    except (ImportError, AttributeError, OSError):  # no choreographer, another API, no file
        pass
    return ("PNG export is off: kaleido is installed but no Chromium was found "
            "(apt install chromium, or run `plotly_get_chrome`, or set BROWSER_PATH). "
            "HTML figures are written regardless.")


_warned = False


@cache
def _start_png_server() -> None:
    """Keep one headless Chromium for every PNG of this process (about 2.5 s per figure
    otherwise, when kaleido starts a browser for each); it is closed at exit."""
    import atexit

    import kaleido  # type: ignore[import-untyped]

    for name in ("choreographer", "kaleido", "logistro"):  # their INFO lines are noise
        logging.getLogger(name).setLevel(logging.WARNING)
    kaleido.start_sync_server(silence_warnings=True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)


def save_figure(fig: go.Figure, path_stem: str | os.PathLike[str]) -> list[Path]:
    """Write ``<stem>.html`` (standalone, plotly.js inline) and ``<stem>.png`` when possible.

    Returns the paths written. Where PNG export is unavailable, logs once why and how to
    enable it (see :func:`png_support`).
    """
    from mechreason.artifacts import atomic_path

    global _warned
    stem = Path(path_stem)
    out = stem.with_name(stem.name + ".html")
    with atomic_path(out) as tmp:
        fig.write_html(str(tmp), include_plotlyjs=True, full_html=True)
    written = [out]
    reason = png_support()
    if reason is None:
        png = stem.with_name(stem.name + ".png")
        try:
            _start_png_server()
            with atomic_path(png) as tmp, warnings.catch_warnings():
                # plotly passes browser options that the shared server already fixed
                warnings.filterwarnings("ignore", message="The kopts argument is ignored")
                fig.write_image(str(tmp), format="png")
            written.append(png)
        except Exception as e:  # PNG is optional; HTML is already written
            log.warning("PNG export failed for %s: %s", png, e)
    elif not _warned:
        log.warning(reason)
        _warned = True
    return written


def figure_div(fig: go.Figure, div_id: str | None = None) -> str:
    """The figure as an HTML ``<div>`` without plotly.js (the page embeds it once)."""
    return str(fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                           config={"displaylogo": False}))


def plotly_js() -> str:
    """The plotly.js bundle's source, for inlining once in a self-contained page."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())
