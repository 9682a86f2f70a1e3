"""Direction directories and llama.cpp control-vector GGUF files: write, read back, refuse."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mechreason.directions.io import (
    DirectionSet,
    export_gguf,
    import_gguf,
    load_direction,
    parse_gguf_layers,
    save_direction,
    vectors_for_export,
)
from mechreason.errors import MechReasonError

D = 13


def _set(layers=(0, 2, 5), d=D) -> DirectionSet:
    g = torch.Generator().manual_seed(1)
    hooks = [f"blocks.{L}.hook_resid_post" for L in layers]
    return DirectionSet(vectors=torch.randn(len(hooks), d, generator=g), hooks=hooks,
                        method="mean-diff", contrast="style=cot:direct",
                        aggregate="first-generated", groups={"A": "style=cot", "B": "style=direct"},
                        counts={"A": 7, "B": 5}, metrics=[{"auroc": 0.5 + i / 10} for i in
                                                          range(len(hooks))],
                        best_hook=hooks[-1], best_rule="max held-out AUROC", model="tiny")


def test_direction_dir_round_trip(tmp_path):
    ds = _set()
    save_direction(tmp_path / "d", ds, cfg={"x": 1})
    back = load_direction(tmp_path / "d")
    assert torch.equal(back.vectors, ds.vectors)
    assert (back.hooks, back.method, back.best_hook, back.counts, back.groups) == (
        ds.hooks, ds.method, ds.best_hook, ds.counts, ds.groups)
    for f in ("direction.safetensors", "direction.json", "cfg.json", "meta.json"):
        assert (tmp_path / "d" / f).is_file()


@pytest.mark.parametrize("layers", [(1,), (1, 3, 4), (2, 7, 11, 29)])
def test_gguf_round_trip_is_exact(tmp_path, layers):
    ds = _set(layers)
    path = tmp_path / "cv.gguf"
    written = export_gguf(path, {h: ds.vector(h) for h in ds.hooks}, model_hint="llama")
    assert written == sorted(layers)
    cv = import_gguf(path)
    assert cv.model_hint == "llama"
    assert sorted(cv.directions) == sorted(layers)
    for h, v in cv.hooks().items():
        assert torch.equal(v, ds.vector(h))


def test_gguf_header(tmp_path):
    import gguf

    ds = _set((3, 4))
    export_gguf(tmp_path / "cv.gguf", {h: ds.vector(h) for h in ds.hooks}, model_hint="llama")
    r = gguf.GGUFReader(str(tmp_path / "cv.gguf"))
    assert r.get_field("general.architecture").contents() == "controlvector"
    assert r.get_field("controlvector.layer_count").contents() == 2
    assert sorted(t.name for t in r.tensors) == ["direction.3", "direction.4"]


def test_layer0_cannot_be_exported(tmp_path):
    ds = _set((0, 2))
    vecs = {h: ds.vector(h) for h in ds.hooks}
    with pytest.raises(MechReasonError, match="block 1"):
        export_gguf(tmp_path / "cv.gguf", vecs, model_hint="m")
    assert not (tmp_path / "cv.gguf").exists()
    assert export_gguf(tmp_path / "cv.gguf", vecs, model_hint="m", skip_layer0=True) == [2]


@pytest.mark.parametrize("hook", ["blocks.3.hook_resid_pre", "blocks.3.attn.hook_z", "embed"])
def test_only_resid_post_exports(tmp_path, hook):
    with pytest.raises(MechReasonError, match="resid_post"):
        export_gguf(tmp_path / "cv.gguf", {hook: torch.ones(D)}, model_hint="m")


def test_export_refuses_nan_and_mixed_widths(tmp_path):
    bad = torch.ones(D)
    bad[2] = float("nan")
    with pytest.raises(MechReasonError, match="finite"):
        export_gguf(tmp_path / "a.gguf", {"blocks.1.hook_resid_post": bad}, model_hint="m")
    with pytest.raises(MechReasonError, match="widths"):
        export_gguf(tmp_path / "a.gguf", {"blocks.1.hook_resid_post": torch.ones(D),
                                          "blocks.2.hook_resid_post": torch.ones(D + 1)},
                    model_hint="m")


def test_best_skips_block0():
    ds = dataclasses.replace(_set((0, 2, 5, 6)), best_hook="blocks.0.hook_resid_post",
                             metrics=[{"auroc": a} for a in (0.9, 0.7, 0.8, 0.8)])
    assert list(vectors_for_export(ds, "best")) == ["blocks.5.hook_resid_post"]
    only0 = dataclasses.replace(_set((0,)), best_hook="blocks.0.hook_resid_post")
    with pytest.raises(MechReasonError, match="L >= 1"):
        vectors_for_export(only0, "best")


def test_vectors_for_export():
    ds = _set((0, 2, 5))
    assert list(vectors_for_export(ds, "best")) == ["blocks.5.hook_resid_post"]
    assert list(vectors_for_export(ds, "all")) == ds.hooks
    assert list(vectors_for_export(ds, [2])) == ["blocks.2.hook_resid_post"]
    with pytest.raises(MechReasonError, match=r"not swept.*\[0, 2, 5\]"):
        vectors_for_export(ds, [3])
    with pytest.raises(MechReasonError, match="best"):
        vectors_for_export(ds, "worst")


def test_import_errors(tmp_path):
    with pytest.raises(MechReasonError, match="no such"):
        import_gguf(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(MechReasonError, match="GGUF"):
        import_gguf(tmp_path / "junk.gguf")


def test_direction_set_checks_shapes():
    with pytest.raises(MechReasonError, match="hooks"):
        DirectionSet(vectors=torch.ones(2, D), hooks=["a"], method="m")


@pytest.mark.parametrize(("text", "want"), [
    ("all", "all"), ("best", "best"), ("10-15", [10, 11, 12, 13, 14, 15]), ("3,5,7", [3, 5, 7]),
    ("3, 10-12", [3, 10, 11, 12]), ("7", [7]), ("2-2,2", [2]),
])
def test_parse_gguf_layers(text, want):
    assert parse_gguf_layers(text) == want


@pytest.mark.parametrize("text", ["", "x", "5-3", "1-", "3,,b", "worst"])
def test_parse_gguf_layers_refuses(text):
    with pytest.raises(MechReasonError, match="10-15"):
        parse_gguf_layers(text)


def test_export_every_layer_range_and_best(tmp_path):
    """``all`` writes one tensor per swept layer >= 1; a range picks a slice; best one."""
    ds = _set((0, 1, 2, 3, 5, 8))
    for layers, want in (("all", [1, 2, 3, 5, 8]), ([2, 3], [2, 3]), ("best", [8])):
        path = tmp_path / f"{layers}.gguf"
        assert export_gguf(path, vectors_for_export(ds, layers), model_hint="llama",
                           skip_layer0=layers == "all") == want
        cv = import_gguf(path)
        assert sorted(cv.directions) == want
        for h, v in cv.hooks().items():
            assert torch.equal(v, ds.vector(h))


def test_repeng_reads_our_gguf(tmp_path, monkeypatch):
    """repeng (a real client of the format) imports our file with the same tensors per
    layer, the model hint, and no warning about the architecture field.

    repeng 0.4.0 (the newest release) pins numpy<2 and names ``np.float_`` in a type hint
    at import; numpy 2 removed that alias, so scripts/setup.sh installs repeng with
    --no-deps and the alias is restored for this test only. ``import_gguf`` itself runs
    unchanged.
    """
    import warnings

    import numpy as np

    monkeypatch.setattr(np, "float_", np.float64, raising=False)
    from repeng import ControlVector

    ds = _set((1, 2, 3, 7, 11))
    export_gguf(tmp_path / "cv.gguf", vectors_for_export(ds, "all"), model_hint="llama")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cv = ControlVector.import_gguf(str(tmp_path / "cv.gguf"))
    assert cv.model_type == "llama"
    assert sorted(cv.directions) == [1, 2, 3, 7, 11]
    for layer, v in cv.directions.items():
        assert torch.equal(torch.from_numpy(v.copy()), ds.vector(f"blocks.{layer}.hook_resid_post"))
