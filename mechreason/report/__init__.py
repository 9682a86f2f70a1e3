"""Presentation: the one-command demo (``mechreason demo``: every stage on a bundled
model), its stage helpers, plotly figures, and the self-contained offline HTML report.

Exports load lazily, so importing the package does not import torch or plotly.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "DemoConfig": "demo_config", "Sizes": "demo_config", "run_demo": "demo",
    "ReportConfig": "html", "build_report": "html", "REPORT_HTML": "html",
    "STAGES": "stages",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
