"""Every lazily exported name of every package resolves to what it names, also after its
submodule was imported (Python then binds the package attribute to the submodule)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import pytest

PACKAGES = ["mechreason", "mechreason.model", "mechreason.traces", "mechreason.activations",
            "mechreason.directions", "mechreason.sae", "mechreason.steering", "mechreason.methods",
            "mechreason.anchors", "mechreason.report"]


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_resolve_after_their_submodules_are_imported(package):
    pkg = importlib.import_module(package)
    exports = getattr(pkg, "_EXPORTS", None)  # None: the package imports its names eagerly
    if exports is None:
        exports = {name: getattr(pkg, name).__module__ for name in pkg.__all__
                   if hasattr(getattr(pkg, name), "__module__")}  # constants name no module
    for sub in set(exports.values()):  # submodules first, as in real use
        importlib.import_module(sub if "." in sub else f"{package}.{sub}")
    for name, sub in exports.items():
        want = getattr(importlib.import_module(sub if "." in sub else f"{package}.{sub}"), name)
        got = getattr(pkg, name)
        if isinstance(got, types.ModuleType):  # a submodule of the same name: must act as it
            assert callable(got) and got.__name__ == f"{package}.{name}", name
        else:
            assert got is want, name


def test_capture_is_the_function_after_every_submodule_is_imported(tiny, tmp_path):
    """No submodule is named ``capture``, so importing the stage's modules never rebinds
    the name: ``from mechreason import capture`` is the function, whatever ran before."""
    import mechreason
    import mechreason.activations.config
    import mechreason.activations.items
    import mechreason.activations.run
    import mechreason.activations.store
    from mechreason import CaptureConfig, capture

    assert isinstance(capture, types.FunctionType)
    assert capture is mechreason.activations.capture is mechreason.activations.run.capture
    store = capture(tiny, ["one two"], CaptureConfig(hooks=("blocks.1.hook_resid_post",)),
                    tmp_path / "a", progress=False)
    assert store.load("blocks.1.hook_resid_post").shape == (len(tiny.encode("one two")), tiny.d_model)


def test_readme_import_line_in_a_fresh_interpreter():
    code = ("from mechreason import load_model, capture, CaptureConfig, ActivationStore\n"
            "import mechreason.activations.run\n"
            "import types\n"
            "assert isinstance(capture, types.FunctionType)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
