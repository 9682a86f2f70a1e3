"""Scale: reasoning traces over Ray workers (DESIGN section 10).

The driver owns the traces file: it checks what is already there (resume), cuts the
missing problems into shards, and appends each finished shard's records once per id.
Each worker loads its own model and runs :func:`mechreason.traces.run.iter_records`; a
record depends only on its problem (its seed is ``row_seed(problem id)``), so the file
holds the same records as ``run_traces`` in one process (in another order).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError
from mechreason.model.generation import SamplingConfig
from mechreason.scale.ray_driver import Pool, connect
from mechreason.scale.shards import RecordSink, make_shards
from mechreason.scale.workers import ModelSpec, make_generator, model_info, trace_work

if TYPE_CHECKING:
    from mechreason.traces.tasks import Problem

log = logging.getLogger(__name__)


class _Stamp:
    """What the resume check reads from a model (name and weights hash)."""

    def __init__(self, name: str, weights_hash: str | None):
        self.name, self.weights_hash = name, weights_hash


def run_traces_ray(spec: ModelSpec, problems: Sequence[Problem], out: str | os.PathLike[str], *,
                   style: str, sampling: SamplingConfig, address: str = "local",
                   workers: int = 2, shard_size: int | None = None, labeller: str = "rules",
                   keep_tail: bool = True, pool: Pool | None = None,
                   on_dispatch: Callable | None = None) -> list[dict[str, Any]]:
    """:func:`mechreason.traces.run.run_traces` with the generation on Ray workers.

    ``shard_size`` problems per shard (default: the sampling batch size); ``pool``: an
    already started :class:`~mechreason.scale.ray_driver.Pool` (left open for the
    caller), else one is started and closed here.
    """
    from mechreason.outputs import check_out_file, output_lock
    from mechreason.traces.prompts import get_style
    from mechreason.traces.run import (
        _check_resumable,
        _check_same_problems,
        append_record,
        read_traces,
        trace_id,
    )

    path = check_out_file(out)
    st = get_style(style)
    with output_lock(path, is_dir=False):
        done = {r["id"]: r for r in read_traces(path)} if path.exists() else {}
        ids = [trace_id(p.id, st.name, sampling) for p in problems]
        if len(set(ids)) != len(ids):
            raise MechReasonError("problem ids repeat; each trace needs a unique id")
        _check_same_problems(path, done, ids, problems)
        todo = [p for p, t in zip(problems, ids) if t not in done]
        log.info("%d of %d traces already in %s; generating %d on Ray workers",
                 len(ids) - len(todo), len(ids), path, len(todo))
        own = pool is None
        if pool is None:
            connect(address)
            pool = Pool(make_generator, (spec,), workers=workers)
        try:
            _check_resumable(path, [done[t] for t in ids if t in done],
                             _Stamp(*pool.call(model_info)), sampling)  # type: ignore[arg-type]
            sink = RecordSink(lambda rec: append_record(path, rec), "id", done)
            shards = make_shards(todo, key=lambda p: trace_id(p.id, st.name, sampling),
                                 size=shard_size or sampling.batch_size,
                                 context=(st.name, sampling, keep_tail, labeller))
            pool.run(shards, trace_work, lambda _s, recs: sink.add(recs),
                     on_dispatch=on_dispatch)
        finally:
            if own:
                pool.close()
    return [sink.done[t] for t in ids if t in sink.done]
