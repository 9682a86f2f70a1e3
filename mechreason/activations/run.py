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
import re
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.artifacts import (
    artifact_path,
    atomic_path,
    corrupt_error,
    read_json,
    save_tensors,
    write_json,
    write_meta,
)
from mechreason.errors import MechReasonError, unknown

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model

log = logging.getLogger(__name__)

POSITION_MODES = ("all", "last", "prompt", "generated", "first-generated")
AGGREGATES = ("token", "mean")
DTYPES = ("float16", "bfloat16", "float32")
_SKIP_FIELDS = {"prompt", "generated_text", "prompt_ids", "generated_ids", "sentences"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    """What to capture and how to store it."""

    hooks: tuple[str, ...]
    """TransformerLens hook names; ``blocks.*.hook_resid_post`` expands to every layer."""
    positions: str | tuple[int, ...] = "all"
    """``all``, ``last``, ``prompt``, ``generated``, ``first-generated`` (the last three
    need trace records), or explicit token indices (negative counts from the end)."""
    aggregate: str = "token"
    """``token``: one row per position; ``mean``: one row per sentence for traces (per
    item otherwise), the mean over the selected positions."""
    dtype: str = "float16"
    """Storage dtype: float16, bfloat16 or float32."""
    batch_size: int = 8
    """Items per forward pass."""
    shard_rows: int = 4096
    """A shard is closed (at a batch boundary) once it holds at least this many rows."""
    max_length: int | None = None
    """Truncate items to this many tokens (None: no limit)."""

    def __post_init__(self) -> None:
        if not self.hooks:
            raise MechReasonError("capture needs at least one hook name")
        if isinstance(self.positions, str) and self.positions not in POSITION_MODES:
            raise unknown("positions mode", self.positions, POSITION_MODES)
        if self.aggregate not in AGGREGATES:
            raise unknown("aggregate", self.aggregate, AGGREGATES)
        if self.dtype not in DTYPES:
            raise unknown("dtype", self.dtype, DTYPES)
        if self.batch_size < 1 or self.shard_rows < 1:
            raise MechReasonError(
                f"batch_size and shard_rows must be >= 1, got {self.batch_size}, {self.shard_rows}")


@dataclasses.dataclass
class _Item:
    """One sequence to run, with its structure (for traces)."""

    id: str
    ids: list[int]
    fields: dict[str, Any]
    prompt_len: int | None = None
    sentences: list[tuple[int, int]] | None = None
    answer_start: int | None = None

    def phase(self, pos: int) -> str | None:
        if self.prompt_len is None:
            return None
        if pos < self.prompt_len:
            return "prompt"
        if self.answer_start is not None and pos >= self.answer_start:
            return "answer"
        return "reasoning"

    def sentence_of(self, pos: int) -> int | None:
        for i, (s, e) in enumerate(self.sentences or ()):
            if s <= pos < e:
                return i
        return None


def expand_hooks(model: Model, hooks: Sequence[str]) -> tuple[str, ...]:
    """Validate hook names, expanding ``blocks.*.`` to every layer."""
    out: list[str] = []
    for h in hooks:
        names = [h.replace("*", str(i)) for i in range(model.n_layers)] if "*" in h else [h]
        out.extend(model.check_hook(n) for n in names)
    return tuple(dict.fromkeys(out))


def load_items(model: Model, inputs: Any,
               max_length: int | None = None) -> list[_Item]:
    """Turn texts, token-id lists or a .txt / .jsonl file into items."""
    if isinstance(inputs, (str, os.PathLike)) and Path(inputs).suffix in {".txt", ".jsonl"}:
        items = _items_from_file(model, Path(inputs))
    elif isinstance(inputs, (str, os.PathLike)):
        raise MechReasonError(f"input {str(inputs)!r} should be a .txt or .jsonl file "
                              "(or pass a list of texts)")
    else:
        items = [_Item(str(i), model.encode(x) if isinstance(x, str) else [int(t) for t in x], {})
                 for i, x in enumerate(inputs)]
    if not items:
        raise MechReasonError("capture input is empty: no texts, token ids or records")
    for it in items:
        _check_item(model, it, max_length)
    if len({it.id for it in items}) != len(items):
        raise MechReasonError("capture input has duplicate item ids")
    return items


def _check_item(model: Model, it: _Item, max_length: int | None) -> None:
    """Refuse an empty item, token ids outside the vocabulary, and (without
    ``max_length``, the explicit truncation recorded in the store's config) an item
    longer than the model's context; truncate to ``max_length``."""
    from mechreason.validate import check_length, check_token_ids

    if not it.ids:
        raise MechReasonError(f"item {it.id!r} has no tokens")
    check_token_ids(it.ids, model.d_vocab, f"item {it.id!r}")
    if max_length is not None:
        it.ids = it.ids[:max_length]
    check_length(len(it.ids), model, f"item {it.id!r}")


def _items_from_file(model: Model, path: Path) -> list[_Item]:
    from mechreason.artifacts import read_text

    if not path.is_file():
        raise MechReasonError(f"cannot read input file {str(path)!r}: no such file")
    lines = [ln for ln in read_text(path, "input file").splitlines() if ln.strip()]
    if path.suffix == ".txt":
        return [_Item(str(i), model.encode(ln), {}) for i, ln in enumerate(lines)]
    items = []
    for n, ln in enumerate(lines, 1):
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError as e:
            raise MechReasonError(f"{path}:{n} is not valid JSON: {e}") from None
        if not isinstance(rec, dict):
            raise MechReasonError(f"{path}:{n} is not a JSON object")
        items.append(_record_item(model, rec, str(rec.get("id", n - 1)), f"{path}:{n}"))
    return items


def _record_item(model: Model, rec: dict[str, Any], item_id: str, where: str) -> _Item:
    fields: dict[str, Any] = {k: v for k, v in rec.items()
              if k not in _SKIP_FIELDS and (v is None or isinstance(v, (str, int, float, bool)))}
    if "prompt_ids" in rec and "generated_ids" in rec:  # a trace record
        from mechreason.validate import check_same_model

        check_same_model(rec, model, f"{where} (trace {item_id!r})")
        ids = [int(t) for t in rec["prompt_ids"]] + [int(t) for t in rec["generated_ids"]]
        sents = rec.get("sentences") or []
        fields["sentence_labels"] = [s.get("labels", []) for s in sents]
        fields["sentence_behaviours"] = [s.get("behaviours", []) for s in sents]
        return _Item(item_id, ids, fields, prompt_len=len(rec["prompt_ids"]),
                     sentences=[(int(s["tok_start"]), int(s["tok_end"])) for s in sents],
                     answer_start=rec.get("answer_tok_start"))
    text = rec.get("text", rec.get("question"))
    if not isinstance(text, str):
        raise MechReasonError(f"{where}: a record needs 'text', 'question', or "
                              "'prompt_ids' + 'generated_ids' (a trace)")
    return _Item(item_id, model.encode(text), fields)


def _positions(item: _Item, mode: str | tuple[int, ...]) -> list[int]:
    n = len(item.ids)
    if not isinstance(mode, str):
        bad = [p for p in mode if not -n <= p < n]
        if bad:
            raise MechReasonError(f"positions {bad} out of range for item {item.id!r} "
                                  f"with {n} tokens")
        return sorted({p % n for p in mode})
    if mode == "all":
        return list(range(n))
    if mode == "last":
        return [n - 1]
    if item.prompt_len is None:
        raise MechReasonError(f"positions {mode!r} need trace records (prompt + generated "
                              f"ids); item {item.id!r} is plain text")
    p = item.prompt_len
    return {"prompt": list(range(p)), "generated": list(range(p, n)),
            "first-generated": [p] if p < n else []}[mode]


def _row_plan(item: _Item, cfg: CaptureConfig) -> list[tuple[list[int], dict[str, Any]]]:
    """The rows an item contributes: (positions to average, index row) per row."""
    pos = _positions(item, cfg.positions)
    if cfg.aggregate == "token":
        return [([p], {"item": item.id, "pos": p, "sentence": item.sentence_of(p),
                       "phase": item.phase(p)}) for p in pos]
    if item.sentences:
        keep = set(pos)
        rows = []
        for i, (s, e) in enumerate(item.sentences):
            span = [p for p in range(s, e) if p in keep]
            if span:
                rows.append((span, {"item": item.id, "pos": -1, "sentence": i,
                                    "phase": item.phase(s)}))
        return rows
    return [(pos, {"item": item.id, "pos": -1, "sentence": None, "phase": None})] if pos else []


def _gather(act: torch.Tensor, plan: list[tuple[list[int], dict[str, Any]]],
            aggregate: str) -> torch.Tensor:
    """An item's rows from its (T, d) activations: one gather for tokens, means for spans."""
    import torch

    if not plan:
        return act[:0]
    if aggregate == "token":
        idx = [p[0] for p, _ in plan]
        if idx == list(range(idx[0], idx[0] + len(idx))):
            return act[idx[0]:idx[0] + len(idx)]  # contiguous positions: a view, no copy
        return act[torch.tensor(idx)]
    return torch.stack([act[torch.tensor(p)].float().mean(0) for p, _ in plan])


def _item_entry(item: _Item) -> dict[str, Any]:
    entry = {"item": item.id, "n_tokens": len(item.ids), "prompt_len": item.prompt_len,
             "sentences": [list(s) for s in item.sentences] if item.sentences is not None else None,
             "token_ids": list(item.ids)}
    entry.update({k: v for k, v in item.fields.items() if k not in entry})
    return entry


def capture(model: Model, inputs: Any, cfg: CaptureConfig, out_dir: str | os.PathLike[str],
            *, progress: bool = True) -> ActivationStore:
    """Capture ``cfg.hooks`` over ``inputs`` into ``out_dir``; resume if it exists (the
    same inputs, model and config only), holding the output's lock throughout."""
    from mechreason.outputs import check_out_dir, output_lock

    cfg = dataclasses.replace(cfg, hooks=expand_hooks(model, cfg.hooks))
    items = load_items(model, inputs, cfg.max_length)
    plans = [_row_plan(it, cfg) for it in items]  # validates positions before any work
    out = check_out_dir(out_dir)
    with output_lock(out):
        done = _check_resume(out, model, cfg, _inputs_sha256(items))
        start = _resume_point(out, items, done)
        check_out_dir(out, need=_bytes_needed(model, cfg, plans[start:]))
        return _capture_from(model, items, plans, cfg, out, start, done, progress)


def _inputs_sha256(items: list[_Item]) -> str:
    """The content hash of the inputs: every item's id and token ids."""
    from mechreason.outputs import sha256_of

    return sha256_of([[it.id, it.ids] for it in items])


def _bytes_needed(model: Model, cfg: CaptureConfig,
                  plans: list[list[tuple[list[int], dict[str, Any]]]]) -> int:
    rows = sum(len(p) for p in plans)
    return rows * len(cfg.hooks) * model.d_model * (4 if cfg.dtype == "float32" else 2)


def _capture_from(model: Model, items: list[_Item],
                  plans: list[list[tuple[list[int], dict[str, Any]]]], cfg: CaptureConfig,
                  out: Path, start: int, done: int, progress: bool) -> ActivationStore:
    from mechreason.progress import bar

    # closed before any interruption message, not at exit
    with bar("capture", len(items), unit="item", initial=start, enabled=progress) as shown:
        return _capture_batches(model, items, plans, cfg, out, start, done, shown)


def _capture_batches(model: Model, items: list[_Item],
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
                buf_t[h].append(_gather(acts[h][j], plans[i], cfg.aggregate))
            buf_items.append(_item_entry(items[i]))
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
    return len(_complete_shards(out))


def _complete_shards(out: Path) -> list[Path]:
    shards = sorted(out.glob("shard-*.json"))
    for k, p in enumerate(shards):
        if p.name != artifact_path(out, "shard", k).with_suffix(".json").name:
            raise MechReasonError(f"{out}: shard sidecars are not contiguous at {p.name}")
    return shards


def _resume_point(out: Path, items: list[_Item], done: int) -> int:
    n = 0
    for p in _complete_shards(out)[:done]:
        side = read_json(p, "shard index")
        for entry in side["items"]:
            if n >= len(items) or entry["item"] != items[n].id:
                raise MechReasonError(f"{out} was captured from different inputs "
                                      f"(item {entry['item']!r} at {n}); use a new --out")
            n += 1
    if n:
        log.info("resuming capture at item %d of %d", n, len(items))
    return n


def _forward_batch(model: Model, batch: list[_Item], hooks: Sequence[str],
                   keep_dtype: str | None = None) -> dict[str, list[torch.Tensor]]:
    """One left-padded forward; per hook, each item's (T, d) activations on the CPU, cast
    to ``keep_dtype`` inside the hook (the storage dtype: one half-size copy) or float32."""
    import torch

    from mechreason.model.hooks import StopForward, hooks_context, run_forward
    from mechreason.model.loading import _parse_dtype

    td = _parse_dtype(keep_dtype) if keep_dtype else torch.float32

    lens = [len(it.ids) for it in batch]
    width = max(lens)
    ids = torch.full((len(batch), width), model.pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, it in enumerate(batch):
        ids[r, width - lens[r]:] = torch.tensor(it.ids)
        mask[r, width - lens[r]:] = 1
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

    from mechreason.model.loading import _parse_dtype
    from mechreason.validate import check_finite_tensor

    td = _parse_dtype(dtype)
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
        for k, side in enumerate(_complete_shards(self.root)):
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

    def load(self, hook: str, rows: Sequence[int] | None = None, dtype: Any = None) -> torch.Tensor:
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
                     rows: Sequence[int] | None = None, buffer_shards: int = 4) -> Iterator[torch.Tensor]:
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


def parse_positions(spec: str) -> str | tuple[int, ...]:
    """CLI form: a mode name, or comma-separated token indices (``0,5,-1``)."""
    if spec in POSITION_MODES:
        return spec
    if re.fullmatch(r"-?\d+(,-?\d+)*", spec):
        return tuple(int(x) for x in spec.split(","))
    raise unknown("positions", spec, [*POSITION_MODES, "<comma-separated indices>"])


class _CallableModule(types.ModuleType):
    """``from mechreason import capture`` must give something that captures. Python binds
    a package attribute to its submodule once the submodule is imported, so after any
    ``import mechreason.activations.run`` that name is this module, not the function; calling
    the module calls :func:`capture`, and ``mechreason.activations.run.X`` keeps working."""

    def __call__(self, *args: Any, **kwargs: Any) -> ActivationStore:
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
