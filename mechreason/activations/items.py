"""Capture inputs as items (texts, token ids, trace records) and the rows each contributes
(positions, sentence and phase per row)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.activations.config import CaptureConfig
from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model

log = logging.getLogger(__name__)

_SKIP_FIELDS = {"prompt", "generated_text", "prompt_ids", "generated_ids", "sentences"}


@dataclasses.dataclass
class Item:
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
               max_length: int | None = None) -> list[Item]:
    """Turn texts, token-id lists or a .txt / .jsonl file into items."""
    if isinstance(inputs, (str, os.PathLike)) and Path(inputs).suffix in {".txt", ".jsonl"}:
        items = _items_from_file(model, Path(inputs))
    elif isinstance(inputs, (str, os.PathLike)):
        raise MechReasonError(f"input {str(inputs)!r} should be a .txt or .jsonl file "
                              "(or pass a list of texts)")
    else:
        items = [Item(str(i), model.encode(x) if isinstance(x, str) else [int(t) for t in x], {})
                 for i, x in enumerate(inputs)]
    if not items:
        raise MechReasonError("capture input is empty: no texts, token ids or records")
    for it in items:
        _check_item(model, it, max_length)
    if len({it.id for it in items}) != len(items):
        raise MechReasonError("capture input has duplicate item ids")
    return items


def _check_item(model: Model, it: Item, max_length: int | None) -> None:
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


def _items_from_file(model: Model, path: Path) -> list[Item]:
    from mechreason.artifacts import read_text

    if not path.is_file():
        raise MechReasonError(f"cannot read input file {str(path)!r}: no such file")
    lines = [ln for ln in read_text(path, "input file").splitlines() if ln.strip()]
    if path.suffix == ".txt":
        return [Item(str(i), model.encode(ln), {}) for i, ln in enumerate(lines)]
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


def _record_item(model: Model, rec: dict[str, Any], item_id: str, where: str) -> Item:
    fields: dict[str, Any] = {k: v for k, v in rec.items()
              if k not in _SKIP_FIELDS and (v is None or isinstance(v, (str, int, float, bool)))}
    if "prompt_ids" in rec and "generated_ids" in rec:  # a trace record
        from mechreason.validate import check_same_model

        check_same_model(rec, model, f"{where} (trace {item_id!r})")
        ids = [int(t) for t in rec["prompt_ids"]] + [int(t) for t in rec["generated_ids"]]
        sents = rec.get("sentences") or []
        fields["sentence_labels"] = [s.get("labels", []) for s in sents]
        fields["sentence_behaviours"] = [s.get("behaviours", []) for s in sents]
        return Item(item_id, ids, fields, prompt_len=len(rec["prompt_ids"]),
                     sentences=[(int(s["tok_start"]), int(s["tok_end"])) for s in sents],
                     answer_start=rec.get("answer_tok_start"))
    text = rec.get("text", rec.get("question"))
    if not isinstance(text, str):
        raise MechReasonError(f"{where}: a record needs 'text', 'question', or "
                              "'prompt_ids' + 'generated_ids' (a trace)")
    return Item(item_id, model.encode(text), fields)


def _positions(item: Item, mode: str | tuple[int, ...]) -> list[int]:
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


def row_plan(item: Item, cfg: CaptureConfig) -> list[tuple[list[int], dict[str, Any]]]:
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


def gather(act: torch.Tensor, plan: list[tuple[list[int], dict[str, Any]]],
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


def item_entry(item: Item) -> dict[str, Any]:
    entry = {"item": item.id, "n_tokens": len(item.ids), "prompt_len": item.prompt_len,
             "sentences": [list(s) for s in item.sentences] if item.sentences is not None else None,
             "token_ids": list(item.ids)}
    entry.update({k: v for k, v in item.fields.items() if k not in entry})
    return entry


