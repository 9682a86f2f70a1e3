"""Scale, stage 1: a Ray driver that fans shards out to workers and survives a worker
that dies (DESIGN section 10).

Each worker is a Ray actor that builds its own state once (a model, i.e. its own
generation backend) with ``setup(*args)`` and then runs ``work(state, shard)`` per shard
(any work: one pool serves traces and rollouts), returning the shard's records. The driver keeps one shard in flight per worker and
hands every finished shard's records to ``on_result`` (the one writer,
:class:`mechreason.scale.shards.RecordSink`), so records reach the output file only from
the driver, in whole shards. When a worker dies (killed, out of memory, its machine
gone) the shard it held is queued again on a fresh worker; records already merged are
never written twice, and a shard that kills ``max_tries`` workers in a row stops the run
with an error naming it. An exception raised by the work itself (bad input) is not
retried: it is re-raised in the driver.

``address``: ``local`` starts a Ray instance on this machine (localhost only, no
dashboard); ``auto`` joins the cluster this machine belongs to (``ray start``); anything
else is a cluster address (``ray://host:10001`` or ``host:6379``).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from mechreason.errors import MechReasonError
from mechreason.scale.shards import Shard

log = logging.getLogger(__name__)


def _ray():
    try:
        import ray
    except ImportError:
        raise MechReasonError("--ray needs Ray: pip install 'mechreason[ray]'") from None
    return ray


def connect(address: str, *, num_cpus: int | None = None) -> None:
    """Join (``auto`` or an address) or start (``local``) a Ray cluster, once per process."""
    ray = _ray()
    if ray.is_initialized():
        return
    # no token file under the home directory, and no usage report from an offline machine
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == "local":
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False,
                 runtime_env={"env_vars": _worker_env()})
    else:
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": _worker_env()})


def _worker_env() -> dict[str, str]:
    """Thread counts travel to the workers (one torch thread per core a worker holds)."""
    return {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "HF_HOME",
                                       "MECHREASON_CACHE", "MECHREASON_BACKEND",
                                       "MECHREASON_VLLM_PYTHON")
            if k in os.environ}


Work = Callable[[Any, Shard], list[dict[str, Any]]]
"""``work(state, shard) -> records``: a module-level function (it travels by name)."""


class _Worker:
    """A Ray actor: state built once by ``setup``, then any ``work`` per shard."""

    def __init__(self, setup: Callable[..., Any], args: tuple[Any, ...]):
        self._state = setup(*args)

    def run(self, work: Work, shard: Shard) -> list[dict[str, Any]]:
        return work(self._state, shard)

    def pid(self) -> int:
        return os.getpid()

    def call(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self._state)


def _warn_if_short(cpus: float) -> bool:
    """Warn (and say so) when the workers ask for more CPUs than the cluster has free:
    Ray then starts only the workers that fit and the rest wait, which looks like a hang
    on a machine whose CPUs are all taken (an autoscaling cluster may add nodes)."""
    free = _ray().available_resources().get("CPU", 0.0)
    if cpus <= free:
        return False
    log.warning("the workers need %g CPUs but the Ray cluster has %g free: the extra workers "
                "wait for CPUs to free up (fewer --workers, or a bigger cluster, avoids the "
                "wait)", cpus, free)
    return True


class Pool:
    """``workers`` Ray actors, each holding what ``setup(*args)`` built."""

    def __init__(self, setup: Callable[..., Any], args: tuple[Any, ...], *, workers: int,
                 cpus_per_worker: float = 1.0):
        if workers < 1:
            raise MechReasonError(f"workers must be >= 1, got {workers}")
        ray = _ray()
        _warn_if_short(workers * cpus_per_worker)
        self._cls = ray.remote(num_cpus=cpus_per_worker, max_restarts=0)(_Worker)
        self._spec = (setup, args)
        self.actors = [self._new() for _ in range(workers)]
        self.replaced = 0
        """Workers that died and were replaced."""

    def _new(self) -> Any:
        return self._cls.remote(*self._spec)  # type: ignore[attr-defined]

    def pids(self) -> list[int]:
        """The workers' process ids (waits until every worker has finished ``setup``)."""
        return _ray().get([a.pid.remote() for a in self.actors])

    def call(self, fn: Callable[[Any], Any]) -> Any:
        """``fn(state)`` on the first worker (e.g. the model's name and weights hash)."""
        return _ray().get(self.actors[0].call.remote(fn))

    def run(self, shards: Sequence[Shard], work: Work,
            on_result: Callable[[Shard, list[dict[str, Any]]], object], *, max_tries: int = 3,
            on_dispatch: Callable[[Pool, dict[Any, tuple[int, Shard]]], None] | None = None) -> None:
        """Run ``work`` on every shard, calling ``on_result(shard, records)`` in the
        driver as each finishes; see the module docstring for what happens when a worker dies.
        ``on_dispatch(pool, in_flight)`` is called after each round of dispatching
        (in_flight: object ref -> (worker index, shard)); tests use it to kill a worker."""
        ray = _ray()
        queue: deque[Shard] = deque(shards)
        tries: dict[str, int] = {}
        idle = list(range(len(self.actors)))
        flight: dict[Any, tuple[int, Shard]] = {}
        while queue or flight:
            while queue and idle:
                w, shard = idle.pop(0), queue.popleft()
                flight[self.actors[w].run.remote(work, shard)] = (w, shard)
            if on_dispatch is not None:
                on_dispatch(self, flight)
            [ref], _ = ray.wait(list(flight), num_returns=1)
            w, shard = flight.pop(ref)
            try:
                records = ray.get(ref)
            except ray.exceptions.RayTaskError as e:  # the work raised: bad input, a bug
                raise e.as_instanceof_cause() from None
            except ray.exceptions.RayActorError as e:  # the worker died: retry the shard
                tries[shard.name] = tries.get(shard.name, 0) + 1
                if tries[shard.name] >= max_tries:
                    last = (str(e).strip().splitlines() or [""])[-1][:200]
                    raise MechReasonError(
                        f"shard {shard.name} lost {max_tries} workers in a row ({last}); its "
                        f"items {list(shard.keys[:3])}... may crash a worker, or the worker "
                        "cannot start: run without --ray to see the error") from None
                log.warning("worker %d died running %s; retrying it on a new worker", w,
                            shard.name)
                self.actors[w] = self._new()
                self.replaced += 1
                queue.appendleft(shard)
            else:
                on_result(shard, records)
            idle.append(w)

    def close(self) -> None:
        ray = _ray()
        for a in self.actors:
            ray.kill(a)
        self.actors = []
