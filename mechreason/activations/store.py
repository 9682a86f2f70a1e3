"""Read a capture directory: the row index, per-item fields and tensors by hook."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.activations.items import load_items
from mechreason.artifacts import (
    artifact_path,
    corrupt_error,
    read_json,
)
from mechreason.errors import MechReasonError, unknown

if TYPE_CHECKING:
    import torch
    from jaxtyping import Float

    from mechreason.model.loading import Model

log = logging.getLogger(__name__)

def complete_shards(out: Path) -> list[Path]:
    shards = sorted(out.glob("shard-*.json"))
    for k, p in enumerate(shards):
        if p.name != artifact_path(out, "shard", k).with_suffix(".json").name:
            raise MechReasonError(f"{out}: shard sidecars are not contiguous at {p.name}")
    return shards



class ActivationStore:
    """Read a capture directory: index rows, items, and tensors by hook.

    ``rows[n]`` describes stored vector ``n`` (item, pos, sentence, phase); ``items``
    hold per-item fields (for traces: style, task, correct, sentences, ...).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not artifact_path(self.root, "cfg").is_file():
            raise MechReasonError(f"{str(self.root)!r} is not a capture directory (no cfg.json)")
        self.cfg: dict[str, Any] = read_json(artifact_path(self.root, "cfg"), "capture config")
        meta = artifact_path(self.root, "meta")
        self.meta: dict[str, Any] = read_json(meta, "provenance") if meta.is_file() else {}
        if not isinstance(self.cfg, dict) or not {"capture", "d_model"} <= set(self.cfg):
            raise MechReasonError(f"{str(artifact_path(self.root, 'cfg'))!r} is not a capture "
                                  "config (needs 'capture' and 'd_model')")
        self.hooks: list[str] = list(self.cfg["capture"]["hooks"])
        self.d_model: int = int(self.cfg["d_model"])
        self.items: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self._shard_of: list[tuple[int, int, int]] = []  # (shard, first row, n rows)
        for k, side in enumerate(complete_shards(self.root)):
            data = read_json(side, "shard index")
            self._shard_of.append((k, len(self.rows), len(data["rows"])))
            self.items.extend(data["items"])
            self.rows.extend(data["rows"])
        self._items_by_id = {it["item"]: it for it in self.items}

    def __len__(self) -> int:
        return len(self.rows)

    def check_shards(self) -> None:
        """Open every shard's header (cheap) so a truncated or corrupted shard fails
        before a long job starts rather than in the middle of it."""
        from safetensors import safe_open

        for k, _, _ in self._shard_of:
            path = artifact_path(self.root, "shard", k)
            try:
                with safe_open(str(path), framework="pt") as f:
                    keys = set(f.keys())
                    missing = [h for h in self.hooks if h not in keys]
            except Exception as e:  # SafetensorError, or a missing / unreadable file
                raise corrupt_error(path, "store shard", e) from None
            if missing:
                raise MechReasonError(f"store shard {str(path)!r} lacks hooks {missing}")

    def token_ids(self, model: Model | None = None,
                  input: Any = None) -> dict[str, list[int]]:
        """Item id -> the token ids its rows index (``pos``), from the index itself (empty
        for a store written before ids were kept). With ``input`` (the capture's input,
        as :func:`capture` takes it), the ids come from re-tokenising it with ``model``
        instead, matched to items by id: the way to read an older store."""
        if input is None:
            return {it["item"]: it["token_ids"] for it in self.items if "token_ids" in it}
        if model is None:
            raise MechReasonError("token ids from an input file need the model that tokenises it")
        return {it.id: it.ids for it in load_items(model, input)}

    def item(self, item_id: str) -> dict[str, Any]:
        if item_id not in self._items_by_id:
            raise unknown("item id", item_id, list(self._items_by_id))
        return self._items_by_id[item_id]

    def select(self, **eq: Any) -> list[int]:
        """Row numbers whose row or item fields equal every given value."""
        known = set(self.rows[0]) | set(self.items[0]) if self.rows else set()
        bad = [k for k in eq if k not in known]
        if bad:
            raise unknown("index key", bad[0], sorted(known))
        out = []
        for n, row in enumerate(self.rows):
            item = self._items_by_id[row["item"]]
            if all(row.get(k, item.get(k)) == v for k, v in eq.items()):
                out.append(n)
        return out

    def _check_hook(self, hook: str) -> None:
        if hook not in self.hooks:
            raise unknown("captured hook", hook, self.hooks)

    def _shard_tensor(self, k: int, hook: str) -> torch.Tensor:
        from safetensors import safe_open

        path = artifact_path(self.root, "shard", k)
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(hook)
        except Exception as e:  # SafetensorError, or a missing / unreadable file
            raise corrupt_error(path, "store shard", e) from None

    def load(self, hook: str, rows: Sequence[int] | None = None, dtype: Any = None
             ) -> Float[torch.Tensor, "rows d_model"]:
        """Stored vectors of ``hook`` (all rows, or the given row numbers, in that order)."""
        import torch

        self._check_hook(hook)
        dtype = dtype or torch.float32
        if rows is None:
            parts = [self._shard_tensor(k, hook) for k, _, n in self._shard_of if n]
            return torch.cat(parts).to(dtype) if parts else torch.zeros(0, self.d_model, dtype=dtype)
        rows_t = torch.as_tensor(list(rows), dtype=torch.long)
        if len(rows_t) and (rows_t.min() < 0 or rows_t.max() >= len(self.rows)):
            raise MechReasonError(f"row numbers must be in 0..{len(self.rows) - 1}")
        out = torch.empty(len(rows_t), self.d_model, dtype=dtype)
        for k, first, n in self._shard_of:
            sel = ((rows_t >= first) & (rows_t < first + n)).nonzero().flatten()
            if len(sel):
                out[sel] = self._shard_tensor(k, hook)[rows_t[sel] - first].to(dtype)
        return out

    def iter_batches(self, hook: str, batch_size: int, *, shuffle: bool = True, seed: int = 0,
                     rows: Sequence[int] | None = None, buffer_shards: int = 4
                     ) -> Iterator[Float[torch.Tensor, "batch d_model"]]:
        """Stream float32 batches shard by shard, shuffled within a buffer of shards."""
        import torch

        self._check_hook(hook)
        g = torch.Generator().manual_seed(seed)
        keep = None if rows is None else torch.as_tensor(sorted(set(rows)), dtype=torch.long)
        order = [s for s in self._shard_of if s[2]]
        if shuffle:
            order = [order[i] for i in torch.randperm(len(order), generator=g).tolist()]
        carry = torch.zeros(0, self.d_model)
        for b in range(0, len(order), buffer_shards):
            parts = []
            for k, first, n in order[b:b + buffer_shards]:
                t = self._shard_tensor(k, hook).float()
                if keep is not None:
                    local = keep[(keep >= first) & (keep < first + n)] - first
                    t = t[local]
                parts.append(t)
            buf = torch.cat([carry, *parts])
            if shuffle:
                buf = buf[torch.randperm(len(buf), generator=g)]
            full = len(buf) // batch_size * batch_size
            yield from buf[:full].split(batch_size)
            carry = buf[full:]
        if len(carry):
            yield carry
