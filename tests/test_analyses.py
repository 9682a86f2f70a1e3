"""CI guard for analyses/: every script runs end to end with ``--quick`` on the tiny
random model and writes report.md, results.json and meta.json whose numbers are finite
and in range, and whose invariants hold (ThinkEdit's edited heads no longer write
along the direction; the same-model hybrid steers nothing and equals greedy)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

ANALYSES = Path(__file__).resolve().parents[1] / "analyses"


def _get(obj: Any, path: str) -> Any:
    for key in path.split("/"):
        obj = obj[int(key)] if isinstance(obj, list) else obj[key]
    return obj


def _prob(path: str) -> tuple[str, float, float]:
    return (path, 0.0, 1.0)


# script -> (path in results.json "ours", low, high) checks
CHECKS: dict[str, list[tuple[str, float, float]]] = {
    "cot_decoding.py": [_prob("greedy/value"), _prob("cot_decoding/value"),
                        _prob("random_branch/value"), _prob("oracle_any_branch/value"),
                        ("gain_over_greedy/value", -1.0, 1.0)],
    "thinkedit_head_ranking.py": [_prob("arms/unedited/accuracy/value"),
                                  _prob("arms/top heads edited/accuracy/value"),
                                  ("arms/unedited/tokens/value", 1.0, 1e4),
                                  ("max_abs_write_of_edited_heads_after_edit", 0.0, 1e-4),
                                  ("heads_edited", 1.0, 1e4)],
    "reasonscore.py": [("log_in_out_ratio_top/value", -50.0, 50.0),
                       ("log_in_out_ratio_random/value", -50.0, 50.0),
                       ("n_alive", 1.0, 1e6), _prob("steering/top latent/accuracy/value"),
                       ("log_in_out_ratio_on_eval/top/value", -50.0, 50.0)],
    "he_2026_first_token_steering.py": [_prob("pooled/eval_arms/direct (unsteered)/accuracy/value"),
                                        _prob("pooled/eval_arms/top latent (chosen coef)/reasons_in_steps/value"),
                                        _prob("pooled/tests/reasons_in_steps: steered vs unsteered/fisher_p"),
                                        ("seeds/0/latent_rank_on_eval", 0.0, 1e6),
                                        ("seeds/1/control_alpha_scale", 0.999, 1.001)],
    "venhoff_2025a_label_directions.py": [_prob("label_share/unsteered/value"),
                                          _prob("label_share/+vector/value"),
                                          ("vector_norm", 1e-9, 1e6),
                                          _prob("eval_auroc/direction/value"),
                                          _prob("eval_auroc/random/value")],
    "venhoff_2025b_behaviour_clusters.py": [_prob("nmi_first_label"),
                                            _prob("nmi_shuffled_control/value"),
                                            ("hybrid_same_model/tokens_steered/value", 0.0, 0.0),
                                            ("hybrid_same_model/equals_greedy/value", 1.0, 1.0)],
    "thought_anchors.py": [("n_sentences", 3.0, 1e4), ("rollouts", 1.0, 100.0)],
}


def _load(script: str) -> Any:
    if str(ANALYSES) not in sys.path:
        sys.path.insert(0, str(ANALYSES))  # the scripts import their sibling _common
    spec = importlib.util.spec_from_file_location(f"analyses_{script[:-3]}", ANALYSES / script)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_script_is_checked() -> None:
    scripts = {p.name for p in ANALYSES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(CHECKS)  # a new script needs its checks here
    readme = (ANALYSES / "README.md").read_text()
    assert all(s in readme for s in CHECKS)


@pytest.mark.parametrize("script", sorted(CHECKS))
def test_quick_run(script: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _load(script).main(["--quick", "--model", "tiny-random", "--out", str(out)])
    report = (out / "report.md").read_text()
    assert "| quantity | paper | ours" in report and "## Why they differ" in report
    assert "not a result" in report  # a tiny-random run must never read as a result
    res = json.loads((out / "results.json").read_text())
    assert res["script"] == script and res["real"] is False and res["paper"]
    meta = json.loads((out / "meta.json").read_text())
    for sp in res["split"].values():  # pre-registered: tune and eval never share a problem
        assert sp["tune_ids"] and sp["eval_ids"] and not set(sp["tune_ids"]) & set(sp["eval_ids"])
        assert f"tune `{sp['tune']}`" in report and f"eval `{sp['eval']}`" in report
    assert meta["split"] == res["split"] and meta["chosen_on_tune"] == res["chosen_on_tune"]
    for path, lo, hi in CHECKS[script]:
        v = float(_get(res["ours"], path))
        assert math.isfinite(v) and lo <= v <= hi, f"{script}: {path} = {v} not in [{lo}, {hi}]"


def test_bad_n_is_a_user_error(tmp_path: Path) -> None:
    from mechreason.errors import MechReasonError

    with pytest.raises(MechReasonError, match="--n"):
        _load("cot_decoding.py").main(["--model", "tiny-random", "--n", "1",
                                       "--out", str(tmp_path)])


def test_split_refuses_overlap_and_bad_ranges(tmp_path: Path) -> None:
    from mechreason.errors import MechReasonError

    C = _load("cot_decoding.py").C  # the scripts' shared _common
    ap = C.parser("x", n=4)
    with pytest.raises(MechReasonError, match="share 2 problem"):
        C.split(ap.parse_args(["--out", str(tmp_path), "--tune", "0-4", "--eval", "2-6"]))
    with pytest.raises(MechReasonError, match="START < END"):
        C.split(ap.parse_args(["--out", str(tmp_path), "--tune", "5-5"]))
    sp = C.split(ap.parse_args(["--out", str(tmp_path), "--seed", "3", "--eval", "7:0-3"]))
    assert (sp.tune_spec, sp.eval_spec) == ("3:0-4", "7:0-3")
    assert [p.id for p in sp.tune] == [f"arithmetic-s3-d{i % 5 + 1}-{i}" for i in range(4)]
    assert all(p.id.startswith("arithmetic-s7-") for p in sp.eval) and len(sp.eval) == 3
    # a range of the stream equals the same problems drawn as a prefix: 2-4 is 0-4's tail
    tail = C.split(ap.parse_args(["--out", str(tmp_path), "--seed", "3", "--tune", "2-4",
                                  "--eval", "4-6"]))
    assert [p.question for p in tail.tune] == [p.question for p in sp.tune[2:]]


def test_compare_two_proportions() -> None:
    C = _load("cot_decoding.py").C
    a, b = C.proportion(16, 30), C.proportion(11, 30)
    got = C.compare(a, b)
    assert got["value"] == pytest.approx(5 / 30) and got["lo"] < 0 < got["hi"]
    assert 0.2 < got["fisher_p"] < 0.4 and (got["a"], got["b"]) == ("16/30", "11/30")
