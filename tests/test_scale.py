"""Sharding over Ray (mechreason.scale): deterministic shards, a once-per-key writer,
and, on a local Ray cluster started here, the same files as one process even when a
worker is killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from _anchors_fixtures import make_trace

from mechreason.scale.shards import RecordSink, make_shards, shard_name


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_shards_cover_items_once_in_order(size):
    items = [f"item{k}" for k in range(11)]
    shards = make_shards(items, key=str, size=size)
    assert [x for s in shards for x in s.items] == items
    assert all(1 <= len(s.items) <= size for s in shards)
    assert [s.name for s in shards] == [s.name for s in make_shards(items, key=str, size=size)]
    assert len({s.name for s in shards}) == len(shards)


def test_shards_never_mix_groups():
    items = [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0), ("c", 1)]
    shards = make_shards(items, key=lambda x: f"{x[0]}/{x[1]}", size=2, group=lambda x: x[0])
    assert [[f"{g}{i}" for g, i in s.items] for s in shards] == [
        ["a0", "a1"], ["a2"], ["b0"], ["c0", "c1"]]
    assert shard_name(("x/1", "x/2")) != shard_name(("x/1", "x/3"))


def test_sink_writes_each_key_once():
    written = []
    sink = RecordSink(written.append, "id", {"k0": {"id": "k0"}})
    assert sink.add([{"id": "k1"}, {"id": "k0"}, {"id": "k2"}]) == 2
    assert sink.add([{"id": "k1"}, {"id": "k3"}]) == 1  # a shard run twice
    assert [r["id"] for r in written] == ["k1", "k2", "k3"]
    assert sink.duplicates == 2 and sink.missing(["k0", "k3", "k4"]) == ["k4"]


# ------------------------------------------------------------- local Ray cluster

def _cli(*argv, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mechreason", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_traces_cli_on_local_ray_equals_one_process(tmp_path):
    """``mechreason traces --ray local`` end to end, in its own process (its own local Ray
    instance, before this module's pool holds the CPUs): the file equals the one a plain
    run writes, record for record; a re-run finds nothing left to do."""
    pytest.importorskip("ray")
    args = ["traces", "--model", "tiny-random", "--task", "arithmetic", "--n", "4",
            "--max-new-tokens", "12", "--temperature", "0.8", "--seed", "2",
            "--batch-size", "2", "--device", "cpu"]
    one = _cli(*args, "--out", "one.jsonl", cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    ray = _cli(*args, "--out", "ray.jsonl", "--ray", "local", "--workers", "2", cwd=tmp_path)
    assert ray.returncode == 0, ray.stderr[-2000:]
    assert "4 traces in ray.jsonl" in ray.stdout
    by_id = {r["id"]: r for r in _lines(tmp_path / "ray.jsonl")}  # shards land in any order
    assert by_id == {r["id"]: r for r in _lines(tmp_path / "one.jsonl")} and len(by_id) == 4
    again = _cli(*args, "--out", "ray.jsonl", "--ray", "local", "--workers", "2", cwd=tmp_path)
    assert again.returncode == 0 and len(_lines(tmp_path / "ray.jsonl")) == 4


@pytest.fixture(scope="module")
def pool():
    """A local Ray instance (this machine only) and two workers holding the tiny model."""
    ray = pytest.importorskip("ray")
    from mechreason.scale.ray_driver import Pool, connect
    from mechreason.scale.workers import ModelSpec, make_generator

    connect("local", num_cpus=2)
    p = Pool(make_generator, (ModelSpec("tiny-random"),), workers=2)
    p.pids()  # both workers loaded
    yield p
    p.close()
    ray.shutdown()


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_ray_traces_survive_a_killed_worker(tiny, tmp_path, pool):
    """Two workers, one SIGKILLed while it holds a shard: the file ends with exactly the
    records one process writes (same ids, same tokens), none twice."""
    from mechreason.model.generation import SamplingConfig
    from mechreason.scale.traces import run_traces_ray
    from mechreason.scale.workers import ModelSpec
    from mechreason.traces.run import run_traces
    from mechreason.traces.tasks import make_problems

    problems = make_problems("arithmetic", 8, seed=3)
    cfg = SamplingConfig(max_new_tokens=32, temperature=0.8, top_p=0.95, seed=5, batch_size=2)
    one = run_traces(tiny, problems, tmp_path / "one.jsonl", style="cot", sampling=cfg)
    pids = pool.pids()
    killed = []

    def kill_once(p, flight):
        busy = {w for w, _ in flight.values()}
        if not killed and 1 in busy:
            os.kill(pids[1], signal.SIGKILL)
            killed.append(pids[1])

    out = tmp_path / "ray.jsonl"
    replaced = pool.replaced
    got = run_traces_ray(ModelSpec("tiny-random"), problems, out, style="cot",
                         sampling=cfg, pool=pool, shard_size=2, on_dispatch=kill_once)
    assert killed and pool.replaced == replaced + 1
    lines = _lines(out)
    assert len(lines) == len({r["id"] for r in lines}) == len(problems)  # no duplicate, none lost
    by_id = {r["id"]: r for r in lines}
    assert [r["id"] for r in got] == [r["id"] for r in one]
    for r in one:
        assert by_id[r["id"]] == r  # the whole record, tokens included


def test_ray_rollouts_match_one_process(tiny, tmp_path, pool):
    """Rollouts on two workers, one killed (ray.kill) mid-run: rollouts.jsonl holds the
    records of a single-process run, each key once; a re-run has nothing left to do."""
    import ray

    from mechreason.anchors.embed import fallback_extract, fallback_grade
    from mechreason.anchors.resampling import ROLLOUTS_JSONL, ResampleConfig, run_rollouts
    from mechreason.scale.rollouts import RayRunner
    from mechreason.scale.workers import ModelSpec

    trace = make_trace(tiny)
    cfg = ResampleConfig(rollouts=3, max_new_tokens=8, forced_max_tokens=3, batch_size=4)
    kw = dict(extract=fallback_extract, grade=fallback_grade)
    one = run_rollouts(tiny, trace, cfg, tmp_path / "one", **kw)
    killed = []

    def kill_once(p, flight):
        if not killed and len(flight) == 2:
            w, _ = next(iter(flight.values()))
            ray.kill(p.actors[w], no_restart=True)
            killed.append(w)

    replaced = pool.replaced
    with RayRunner("local", ModelSpec("tiny-random"), on_dispatch=kill_once, pool=pool,
                   **kw) as runner:
        got = run_rollouts(tiny, trace, cfg, tmp_path / "ray", runner=runner, **kw)
        assert killed and pool.replaced == replaced + 1
        again = run_rollouts(tiny, trace, cfg, tmp_path / "ray", runner=runner, **kw)
    lines = _lines(tmp_path / "ray" / ROLLOUTS_JSONL)
    assert len(lines) == len({r["key"] for r in lines}) == len(one)
    assert got == one and again == one



def test_asking_for_more_cpus_than_are_free_warns(pool, caplog):
    """The pool's two workers hold both CPUs of the local instance: one more worker would
    wait (it looked like a hang), so the driver says so before starting it."""
    import logging

    from mechreason.scale.ray_driver import _warn_if_short

    with caplog.at_level(logging.WARNING, logger="mechreason.scale.ray_driver"):
        assert _warn_if_short(1.0)
        assert not _warn_if_short(0.0)
    assert "need 1 CPUs but the Ray cluster has 0 free" in caplog.text
