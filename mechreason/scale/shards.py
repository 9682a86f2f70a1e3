"""Scale, stage 0: items cut into shards with deterministic names, and the one writer
that merges finished records into the file a single process would write (DESIGN
section 10).

Traces are keyed by trace id and rollouts by rollout key, and every record depends only
on its own key (per-item seeds), so any partition of the items gives the same records.
A shard is a small list of item keys; its name is a hash of them, so a re-run cuts the
same work into the same shards. :class:`RecordSink` is the only writer: it appends a
record once per key (a shard that ran twice, because its first worker died after
finishing part of it, cannot duplicate a line) and reports which keys are still missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Shard(NamedTuple, Generic[T]):
    """One unit of work for a worker."""

    name: str
    """``shard-<first item>-<hash of all keys>``: the same keys give the same name."""
    keys: tuple[str, ...]
    """The record keys this shard produces."""
    items: tuple[T, ...]
    """What the worker needs to produce them (problems, rollout jobs)."""
    context: Any = None
    """What all shards of a run share (a trace and its settings)."""


def shard_name(keys: Sequence[str]) -> str:
    digest = hashlib.blake2b("\n".join(keys).encode(), digest_size=6).hexdigest()
    return f"shard-{keys[0].replace('/', '_')}-{digest}"


def make_shards(items: Sequence[T], key: Callable[[T], str], size: int,
                group: Callable[[T], Hashable] | None = None,
                context: Any = None) -> list[Shard[T]]:
    """Cut ``items`` (in order) into shards of at most ``size``; with ``group``, a shard
    never mixes groups (e.g. the rollouts of one sentence stay together, so a worker
    reuses one prefix)."""
    if size < 1:
        raise ValueError(f"shard size must be >= 1, got {size}")
    out: list[Shard[T]] = []
    cur: list[T] = []

    def close() -> None:
        if cur:
            keys = tuple(key(x) for x in cur)
            out.append(Shard(shard_name(keys), keys, tuple(cur), context))
            cur.clear()

    for x in items:
        if cur and (len(cur) >= size or (group is not None and group(cur[-1]) != group(x))):
            close()
        cur.append(x)
    close()
    return out


class RecordSink:
    """Writes each record once by key through ``write``; ``done`` holds every record
    already in the output (a resumed run passes the file's records in)."""

    def __init__(self, write: Callable[[dict[str, Any]], None], key: str,
                 done: dict[str, dict[str, Any]] | None = None):
        self._write, self._key = write, key
        self.done: dict[str, dict[str, Any]] = dict(done or {})
        self.duplicates = 0
        """Records that arrived again (a re-run shard) and were not written twice."""

    def add(self, records: Iterable[dict[str, Any]]) -> int:
        """Write the records not yet written; return how many were new."""
        new = 0
        for rec in records:
            k = rec[self._key]
            if k in self.done:
                self.duplicates += 1
                continue
            self._write(rec)
            self.done[k] = rec
            new += 1
        return new

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if k not in self.done]
