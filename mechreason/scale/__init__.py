"""Scale: traces and thought-anchor rollouts sharded by item over Ray workers, merged
by one driver into the files a single process writes (DESIGN section 10).

Modules: ``shards`` (deterministic shards, the once-per-key writer), ``ray_driver`` (the
worker pool that survives a dead worker), ``workers`` (what a worker loads and runs),
``traces`` and ``rollouts`` (the two jobs). Ray is optional: ``pip install
'mechreason[ray]'``; without ``--ray`` nothing here is imported.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "Shard": "mechreason.scale.shards",
    "make_shards": "mechreason.scale.shards",
    "RecordSink": "mechreason.scale.shards",
    "Pool": "mechreason.scale.ray_driver",
    "connect": "mechreason.scale.ray_driver",
    "ModelSpec": "mechreason.scale.workers",
    "make_generator": "mechreason.scale.workers",
    "run_traces_ray": "mechreason.scale.traces",
    "RayRunner": "mechreason.scale.rollouts",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
