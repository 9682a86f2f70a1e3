"""Every lazily exported name of every package resolves to what it names, also after its
submodule was imported (Python then binds the package attribute to the submodule)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = ["mechreason", "mechreason.directions", "mechreason.sae", "mechreason.steering",
            "mechreason.anchors"]


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_resolve_after_their_submodules_are_imported(package):
    pkg = importlib.import_module(package)
    exports = getattr(pkg, "_EXPORTS", None)  # None: the package imports its names eagerly
    if exports is None:
        exports = {name: getattr(pkg, name).__module__ for name in pkg.__all__}
    for sub in set(exports.values()):  # submodules first, as in real use
        importlib.import_module(sub if "." in sub else f"{package}.{sub}")
    for name, sub in exports.items():
        want = getattr(importlib.import_module(sub if "." in sub else f"{package}.{sub}"), name)
        got = getattr(pkg, name)
        if isinstance(got, types.ModuleType):  # a submodule of the same name: must act as it
            assert callable(got) and got.__name__ == f"{package}.{name}", name
        else:
            assert got is want, name


def test_capture_name_captures_either_way(tiny, tmp_path):
    import mechreason
    import mechreason.activations.run as capture_module  # binds mechreason.activations.run to the module
    from mechreason import CaptureConfig, capture

    cfg = CaptureConfig(hooks=("blocks.1.hook_resid_post",))
    via_name = capture(tiny, ["one two"], cfg, tmp_path / "a", progress=False)
    via_func = capture_module.capture(tiny, ["one two"], cfg, tmp_path / "b", progress=False)
    assert mechreason.activations.run is capture_module
    assert via_name.load("blocks.1.hook_resid_post").equal(via_func.load("blocks.1.hook_resid_post"))


def test_readme_import_line_in_a_fresh_interpreter():
    code = ("from mechreason import load_model, capture, CaptureConfig, ActivationStore\n"
            "import mechreason.activations.run\n"
            "assert callable(capture)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
