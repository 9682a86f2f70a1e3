"""Activation capture: hooked forward passes written to disk as sharded safetensors.

Inputs are plain texts, token ids, or trace records (``mechreason traces`` JSONL), whose
index is keyed by trace, sentence and phase (prompt / reasoning / answer). Items are
processed in fixed batches (left padding, attention mask, explicit position ids), the
forward stops after the deepest hooked layer, and each shard is written atomically:
tensors first, then a JSON sidecar that marks the shard complete. Re-running the same
command skips complete shards, so an interrupted capture resumes with identical data,
nothing lost or duplicated. Shards cover consecutive items with deterministic names,
so disjoint item ranges can be filled by several processes and read as one store.

Values are the model's own activations (no weight processing), equal to the HF model's
hidden states, so what is learned from them applies to the HF model and other tools.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.activations.config import CaptureConfig
from mechreason.activations.items import (
    Item,
    expand_hooks,
    gather,
    item_entry,
    load_items,
    row_plan,
)
from mechreason.activations.store import ActivationStore, complete_shards
from mechreason.artifacts import (
    artifact_path,
    atomic_path,
    read_json,
    save_tensors,
    write_json,
    write_meta,
)
from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model


log = logging.getLogger(__name__)


def capture(model: Model, inputs: Any, cfg: CaptureConfig, out_dir: str | os.PathLike[str],
            *, progress: bool = True) -> ActivationStore:
    """Capture ``cfg.hooks`` over ``inputs`` into ``out_dir``; resume if it exists (the
    same inputs, model and config only), holding the output's lock throughout."""
    from mechreason.outputs import check_out_dir, output_lock

    cfg = dataclasses.replace(cfg, hooks=expand_hooks(model, cfg.hooks))
    items = load_items(model, inputs, cfg.max_length)
    plans = [row_plan(it, cfg) for it in items]  # validates positions before any work
    out = check_out_dir(out_dir)
    with output_lock(out):
        done = _check_resume(out, model, cfg, _inputs_sha256(items))
        start = _resume_point(out, items, done)
        check_out_dir(out, need=_bytes_needed(model, cfg, plans[start:]))
        return _capture_from(model, items, plans, cfg, out, start, done, progress)


def _inputs_sha256(items: list[Item]) -> str:
    """The content hash of the inputs: every item's id and token ids."""
    from mechreason.outputs import sha256_of

    return sha256_of([[it.id, it.ids] for it in items])


def _bytes_needed(model: Model, cfg: CaptureConfig,
                  plans: list[list[tuple[list[int], dict[str, Any]]]]) -> int:
    rows = sum(len(p) for p in plans)
    return rows * len(cfg.hooks) * model.d_model * (4 if cfg.dtype == "float32" else 2)


def _capture_from(model: Model, items: list[Item],
                  plans: list[list[tuple[list[int], dict[str, Any]]]], cfg: CaptureConfig,
                  out: Path, start: int, done: int, progress: bool) -> ActivationStore:
    from mechreason.progress import bar

    # closed before any interruption message, not at exit
    with bar("capture", len(items), unit="item", initial=start, enabled=progress) as shown:
        return _capture_batches(model, items, plans, cfg, out, start, done, shown)


def _capture_batches(model: Model, items: list[Item],
                     plans: list[list[tuple[list[int], dict[str, Any]]]], cfg: CaptureConfig,
                     out: Path, start: int, done: int, bar: Any) -> ActivationStore:
    shard = done
    buf_items: list[dict[str, Any]] = []
    buf_rows: list[dict[str, Any]] = []
    buf_t: dict[str, list[torch.Tensor]] = {h: [] for h in cfg.hooks}
    for b0 in range(start, len(items), cfg.batch_size):
        batch = list(range(b0, min(b0 + cfg.batch_size, len(items))))
        acts = _forward_batch(model, [items[i] for i in batch], cfg.hooks,
                              None if cfg.aggregate == "mean" else cfg.dtype)
        for j, i in enumerate(batch):
            buf_rows.extend(row for _, row in plans[i])
            for h in cfg.hooks:
                buf_t[h].append(gather(acts[h][j], plans[i], cfg.aggregate))
            buf_items.append(item_entry(items[i]))
        bar.update(len(batch))
        if len(buf_rows) >= cfg.shard_rows or batch[-1] == len(items) - 1:
            _write_shard(out, shard, buf_items, buf_rows, buf_t, cfg.dtype)
            shard, buf_items, buf_rows, buf_t = shard + 1, [], [], {h: [] for h in cfg.hooks}
    return ActivationStore(out)


def _check_resume(out: Path, model: Model, cfg: CaptureConfig, inputs_sha256: str) -> int:
    """Start a store or check that an existing one was made by the same inputs, model
    and config (naming the first difference)."""
    from mechreason.artifacts import read_json
    from mechreason.outputs import fingerprint_diff

    cfg_json = {"capture": dataclasses.asdict(cfg), "model": model.name,
                "weights_sha256": model.weights_hash, "d_model": model.d_model,
                "inputs_sha256": inputs_sha256}
    path = artifact_path(out, "cfg")
    if path.is_file():
        diff = fingerprint_diff(read_json(path, "capture config"), json.loads(json.dumps(cfg_json)))
        if diff:
            raise MechReasonError(f"{out} holds a capture with different inputs, model or "
                                  f"config ({diff}); use a new --out directory to start a new one")
    else:
        write_json(path, cfg_json)
        write_meta(out, model, stage="capture", hooks=list(cfg.hooks))
    for orphan in out.glob("shard-*.safetensors"):
        if not orphan.with_suffix(".json").is_file():
            orphan.unlink()  # tensors of a shard whose sidecar never landed
    return len(complete_shards(out))



def _resume_point(out: Path, items: list[Item], done: int) -> int:
    n = 0
    for p in complete_shards(out)[:done]:
        side = read_json(p, "shard index")
        for entry in side["items"]:
            if n >= len(items) or entry["item"] != items[n].id:
                raise MechReasonError(f"{out} was captured from different inputs "
                                      f"(item {entry['item']!r} at {n}); use a new --out")
            n += 1
    if n:
        log.info("resuming capture at item %d of %d", n, len(items))
    return n


def _forward_batch(model: Model, batch: list[Item], hooks: Sequence[str],
                   keep_dtype: str | None = None) -> dict[str, list[torch.Tensor]]:
    """One left-padded forward; per hook, each item's (T, d) activations on the CPU, cast
    to ``keep_dtype`` inside the hook (the storage dtype: one half-size copy) or float32."""
    import torch

    from mechreason.model.engine import pad_batch
    from mechreason.model.hooks import StopForward, hooks_context, run_forward
    from mechreason.model.weights import parse_dtype

    td = parse_dtype(keep_dtype) if keep_dtype else torch.float32
    lens = [len(it.ids) for it in batch]
    width = max(lens)
    ids, mask = pad_batch([it.ids for it in batch], model.pad_id)
    pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    got: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def fn(x: torch.Tensor) -> None:
            got[name] = x.detach().to(device="cpu", dtype=td)
        return fn

    fns: dict[str, Any] = {h: [keep(h)] for h in hooks}
    last = _stop_hook(model, hooks)
    if last is not None:
        def stop(_x: torch.Tensor) -> None:
            raise StopForward
        fns.setdefault(last, []).append(stop)
    dev = model.device
    full = min(lens) == width  # no padding: no mask, so attention keeps its causal fast path
    with hooks_context(model, fns):
        run_forward(model, ids.to(dev), None if full else mask.to(dev),
                    position_ids=None if full else pos_ids.to(dev))
    missing = [h for h in hooks if h not in got]
    if missing:
        raise MechReasonError(f"hooks {missing} did not fire during the forward pass")
    return {h: [got[h][r, width - lens[r]:] for r in range(len(batch))] for h in hooks}


def _stop_hook(model: Model, hooks: Sequence[str]) -> str | None:
    """The hook after which nothing captured remains: the deepest layer's block output."""
    layers = [model.hook_layer(h) for h in hooks]
    if any(layer is None for layer in layers):
        return None  # an embed / final-norm / unembed hook: run the whole model
    name = f"blocks.{max(x for x in layers if x is not None)}.hook_out"
    return name if name in model.points else None


def _write_shard(out: Path, k: int, items: list[dict[str, Any]], rows: list[dict[str, Any]],
                 tensors: dict[str, list[torch.Tensor]], dtype: str) -> None:
    import torch

    from mechreason.model.weights import parse_dtype
    from mechreason.validate import check_finite_tensor

    td = parse_dtype(dtype)
    path = artifact_path(out, "shard", k)
    stacked = {h: torch.cat(v).to(td) for h, v in tensors.items()}
    for h, t in stacked.items():
        check_finite_tensor(t, "capture", f"the {dtype} activations of {h} (shard {k})")
    save_tensors(path, stacked)
    try:
        with atomic_path(path.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps({"items": items, "rows": rows}))
    except BaseException:
        path.unlink(missing_ok=True)  # no tensors without the sidecar that completes them
        raise


