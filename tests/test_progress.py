"""Terminal output: progress lines that a log file reads line by line, nesting, -q / -v,
and upstream warnings filtered only where they come from."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import warnings

import pytest
from _anchors_fixtures import write_traces

from mechreason import progress
from mechreason.progress import bar


@pytest.fixture
def log_stream(monkeypatch):
    """Lines mode on a string buffer, every milestone printed (no time gap)."""
    s = io.StringIO()
    monkeypatch.setattr(progress, "_LINE_GAP_S", 0.0)
    progress.configure(verbosity=0, live=False, stream=s)
    yield s
    progress.configure()


def _lines(s: io.StringIO) -> list[str]:
    return [re.sub(r"[\d.]+ s\b", "T s", line) for line in s.getvalue().splitlines()]


def test_lines_mode_milestones_exactly(log_stream):
    with bar("work", 100, unit="item") as p:
        for _ in range(100):
            p.update()
    assert _lines(log_stream) == ["work: started (0/100 items)", "work: 25/100 items (T s)",
                                  "work: 50/100 items (T s)", "work: 75/100 items (T s)",
                                  "work: done, 100/100 items in T s"]


def test_nested_bars_name_their_path(log_stream):
    with bar("demo", 2, unit="stage") as outer:
        with bar("traces"), bar("generate cot", 1, unit="seq") as inner:
            inner.update()
        outer.update()
        with bar("anchors"):
            pass
        outer.update()
    assert _lines(log_stream) == [
        "demo: started (0/2 stages)", "demo > traces: started",
        "demo > traces > generate cot: started (0/1 seq)",
        "demo > traces > generate cot: done, 1/1 seq in T s", "demo > traces: done, in T s",
        "demo: 1/2 stages (T s)", "demo > anchors: started", "demo > anchors: done, in T s",
        "demo: done, 2/2 stages in T s"]


def test_failure_inside_a_bar_says_stopped_and_unwinds(log_stream):
    with pytest.raises(KeyError), bar("outer", 3) as p:
        p.update()
        raise KeyError("x")
    assert _lines(log_stream)[-1] == "outer: stopped, 1/3 its in T s"
    assert progress._open == []
    with bar("next"):
        pass
    assert _lines(log_stream)[-2] == "next: started"  # no stale "outer > " prefix


@pytest.mark.parametrize(("verbosity", "enabled"), [(-1, True), (0, False)])
def test_quiet_or_disabled_writes_nothing(verbosity, enabled):
    s = io.StringIO()
    progress.configure(verbosity=verbosity, live=False, stream=s)
    try:
        with bar("x", 4, enabled=enabled) as p:
            p.update(4)
        assert s.getvalue() == "" and not progress.live()
    finally:
        progress.configure()


def test_live_bars_use_fixed_positions():
    """On a terminal: tqdm bars, the nested one a line below its parent."""
    s = io.StringIO()
    progress.configure(live=True, stream=s)
    try:
        with bar("outer", 2) as a, bar("inner", 2) as b:
            assert (a._bar.pos, b._bar.pos) == (0, -1)  # tqdm stores -position while open
            assert (a._bar.leave, b._bar.leave) == (True, False)
    finally:
        progress.configure()
    assert "\r" in s.getvalue()  # a live display, not a log


def test_upstream_warnings_filtered_only_at_their_module():
    msg = "`torch_dtype` is deprecated! Use `dtype` instead!"
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        progress.filter_upstream_warnings()
        warnings.warn_explicit(msg, FutureWarning, "modeling_utils.py", 1,
                               module="transformers.modeling_utils")
        warnings.warn_explicit(msg, FutureWarning, "mine.py", 1, module="mechreason.mine")
        warnings.warn_explicit("another", FutureWarning, "x.py", 1, module="transformers.x")
    assert [(str(w.message), w.filename) for w in got] == [(msg, "mine.py"), ("another", "x.py")]


def _cli(args: list[str], log, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    code = "import sys; from mechreason.cli import main; sys.exit(main(sys.argv[1:]))"
    with open(log, "w") as err:
        return subprocess.run([sys.executable, "-W", "default", "-c", code, *args],
                              stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                              timeout=600, check=False)


_PROGRESS_LINE = re.compile(r"^[\w -]+( > [\w -]+)*: (started.*|\d+/\d+ \w+ \([\d.]+ s\)|"
                            r"done, .*in [\d.]+ s)$")
_LOG_LINE = re.compile(r"^(DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


def test_cli_log_file_reads_line_by_line(tiny, tmp_path):
    """A real CLI job (thought anchors on the tiny model, which samples rollouts) with
    stderr in a file: every line is a progress line or a log record; no carriage return,
    no escape sequence, no deprecation warning; -q leaves stderr empty; -v adds INFO."""
    traces = write_traces(tiny, tmp_path / "traces.jsonl", n=2)
    base = ["anchors", "--model", "tiny-random", "--traces", str(traces), "--rollouts", "2",
            "--max-new-tokens", "4", "--methods", "resample", "--device", "cpu", "--no-forced"]
    log = tmp_path / "run.log"
    run = _cli([*base, "--out", str(tmp_path / "a")], log)
    assert run.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text and "\x1b" not in text
    assert "FutureWarning" not in text and "DeprecationWarning" not in text
    lines = text.splitlines()
    assert lines, "no progress at all"
    bad = [x for x in lines if not (_PROGRESS_LINE.match(x) or _LOG_LINE.match(x))]
    assert not bad, bad
    assert lines[0].startswith("rollouts: started (0/") and lines[-1].startswith("rollouts: done")
    assert '"view"' in run.stdout  # results still on stdout

    quiet = _cli(["-q", *base, "--out", str(tmp_path / "b")], tmp_path / "q.log")
    assert quiet.returncode == 0 and (tmp_path / "q.log").read_text() == ""
    from mechreason.cli import build_parser

    after = build_parser().parse_args([*base, "--out", "x", "-q"])  # after the subcommand too
    assert after.quiet is True

    verbose = _cli([*base, "-v", "--out", str(tmp_path / "d")], tmp_path / "v.log")
    vtext = (tmp_path / "v.log").read_text()
    assert verbose.returncode == 0 and re.search(r"^INFO mechreason\.", vtext, re.M)
    assert "\r" not in vtext


def test_cli_rejects_quiet_and_verbose(capsys):
    from mechreason.cli import main

    assert main(["-q", "-v", "models"]) == 2  # a usage error: exit 2, one line
    err = capsys.readouterr().err
    assert "not allowed with" in err and len(err.strip().splitlines()) == 1
