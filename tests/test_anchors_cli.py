"""``mechreason anchors`` end to end on the tiny model: every method, the artifact
directory, the viewer export, and bad input rejected before any model loads."""

from __future__ import annotations

import json

import pytest
from _anchors_fixtures import write_traces

from mechreason.anchors.export import read_viewer
from mechreason.cli import main


def test_cli_all_methods(tiny, tmp_path):
    traces = write_traces(tiny, tmp_path / "traces.jsonl", n=4)
    out = tmp_path / "out"
    args = ["anchors", "--model", "tiny-random", "--traces", str(traces), "--index", "1",
            "--rollouts", "2", "--max-new-tokens", "5", "--receivers-top-k", "3", "--device", "cpu",
            "--out", str(out)]
    assert main(args) == 0
    for name in ("cfg.json", "meta.json", "rollouts.jsonl", "resampling.json", "receivers.json",
                 "suppression.safetensors", "table.json"):
        assert (out / name).is_file(), name
    table = json.loads((out / "table.json").read_text())
    n = len(table["rows"])
    chunks, steps = read_viewer(out / "viewer")
    assert len(chunks) == len(steps) == n
    view = (out / "view.html").read_text()  # the trace view holds every sentence's text
    data = json.loads(view.split('id=data>')[1].split("</script>")[0].replace("<\\/", "</"))
    assert [s["text"] for s in data["sentences"]] == [r["text"] for r in table["rows"]]
    assert set(data["affects"]) == {"resampling", "suppression"}
    assert {"counterfactual_kl", "receiver_score", "suppression_out"} <= set(table["rows"][0])
    assert len(table["rank_correlations"]) == 10  # 5 measures, every pair
    rollouts = (out / "rollouts.jsonl").read_text().splitlines()
    assert len(rollouts) == 2 * n + 2 * (n + 1)
    assert main(args) == 0  # a re-run resumes: nothing new to sample
    assert (out / "rollouts.jsonl").read_text().splitlines() == rollouts


@pytest.mark.parametrize("extra,msg", [
    (["--methods", "resample,telepathy"], "unknown anchors method 'telepathy'"),
    (["--rollouts", "0"], "argument --rollouts: '0' is out of range; valid: >= 1"),
    (["--index", "-1"], "argument --index: '-1' is out of range; valid: >= 0"),
])
def test_cli_bad_input(tmp_path, capsys, extra, msg):
    args = ["anchors", "--model", "no-such-model", "--traces", str(tmp_path / "t.jsonl"),
            "--out", str(tmp_path / "o"), *extra]
    assert main(args) == 2
    assert msg in capsys.readouterr().err


def test_cli_index_out_of_range(tiny, tmp_path, capsys):
    traces = write_traces(tiny, tmp_path / "traces.jsonl", n=2)
    args = ["anchors", "--model", "tiny-random", "--traces", str(traces), "--index", "5",
            "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "index 5 out of range" in capsys.readouterr().err
