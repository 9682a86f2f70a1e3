"""Directions, stage 1: contrast sets, two groups of vectors chosen from captured activations.

A contrast names a key and the values of group A and group B (``style=cot:direct``,
``correct=true:false``, ``length=long:short``, ``phase=reasoning:answer``), or a key and
one value, with B the rest (``label=backtracking``: sentences with that label vs all
other sentences). Keys are any scalar field of the capture's items (trace records:
style, task, correct, difficulty, ...), plus ``label`` (a sentence's labels and, when the
capture kept them, its behaviour cues), ``phase``
(of the unit's first token) and ``length`` (generated-token tercile: short / medium /
long over all the stores' items, the long-vs-short split of ThinkEdit).

An aggregation turns a store's token rows into units, one vector each:

- ``sentence-start``: mean over tokens ``[start-1, start+10)`` of each sentence, the
  window of Venhoff et al. 2025a;
- ``sentence-mean``: mean over each sentence's tokens (or the store's per-sentence means);
- ``reasoning-mean``: mean over an item's reasoning tokens;
- ``last-prompt``: the last prompt token (an item's last token for plain texts);
- ``first-generated``: the first generated token (He et al. 2026 steer it).

Every unit keeps its problem id (``question`` by default, so the cot and direct traces of
one problem count as one problem), which the sweep splits on.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from mechreason.activations import ActivationStore
from mechreason.directions.methods import Group
from mechreason.errors import MechReasonError, unknown

AGGREGATIONS = ("sentence-start", "sentence-mean", "reasoning-mean", "last-prompt",
                "first-generated")
SENTENCE_AGGREGATIONS = ("sentence-start", "sentence-mean")
DERIVED_KEYS = ("label", "phase", "length")
WINDOW = (-1, 10)
"""Sentence-start window relative to the sentence's first token (Venhoff et al. 2025a)."""
_SENTENCE_FIELDS = ("sentences", "sentence_labels", "sentence_behaviours")
SPLIT_KEYS = ("problem_id", "question", "item")
"""``split_key="auto"`` uses the first of these that the items carry."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ContrastSpec:
    """``key=A:B`` (B given) or ``key=A`` (B = every other unit)."""

    key: str
    a: str
    b: str | None = None

    @classmethod
    def parse(cls, text: str) -> ContrastSpec:
        m = re.fullmatch(r"\s*([\w.-]+)\s*=\s*([^:]+?)\s*(?::\s*([^:]+?)\s*)?", text)
        if not m:
            raise MechReasonError(f"cannot parse contrast {text!r}; write key=A:B "
                                  "(e.g. style=cot:direct) or key=A (A vs the rest)")
        if m.group(2) == m.group(3):
            raise MechReasonError(f"contrast {text!r} compares a value with itself")
        return cls(key=m.group(1), a=m.group(2), b=m.group(3))

    def __str__(self) -> str:
        return f"{self.key}={self.a}" + (f":{self.b}" if self.b is not None else "")

    @property
    def names(self) -> tuple[str, str]:
        return f"{self.key}={self.a}", (f"{self.key}={self.b}" if self.b is not None
                                        else f"{self.key}!={self.a}")


class Unit(NamedTuple):
    """One vector to build: the mean of ``rows`` of store ``store``."""

    store: int
    item: str
    sentence: int | None
    rows: tuple[int, ...]
    problem: str
    keys: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ContrastSet:
    """Two groups of units over one or more stores, ready to load hook by hook."""

    spec: ContrastSpec
    aggregate: str
    hooks: list[str]
    a: list[Unit]
    b: list[Unit]
    stores: list[ActivationStore]
    split_key: str

    def groups(self, hook: str) -> tuple[Group, Group]:
        """Group A and group B vectors (float32) at ``hook``, rows tagged by problem id."""
        if hook not in self.hooks:
            raise unknown("hook", hook, self.hooks)
        return (Group(self._vectors(hook, self.a), [u.problem for u in self.a]),
                Group(self._vectors(hook, self.b), [u.problem for u in self.b]))

    def _vectors(self, hook: str, units: list[Unit]) -> torch.Tensor:
        out = torch.empty(len(units), self.stores[0].d_model)
        for s, store in enumerate(self.stores):
            mine = [i for i, u in enumerate(units) if u.store == s]
            if not mine:
                continue
            flat = [r for i in mine for r in units[i].rows]
            acts = store.load(hook, flat).double()
            owner = torch.repeat_interleave(
                torch.arange(len(mine)), torch.tensor([len(units[i].rows) for i in mine]))
            sums = torch.zeros(len(mine), acts.shape[1], dtype=torch.float64)
            sums.index_add_(0, owner, acts)
            counts = torch.bincount(owner, minlength=len(mine)).double()[:, None]
            out[mine] = (sums / counts).float()
        return out

    def counts(self) -> dict[str, int]:
        return {"A": len(self.a), "B": len(self.b),
                "A_problems": len({u.problem for u in self.a}),
                "B_problems": len({u.problem for u in self.b}),
                "A_items": len({(u.store, u.item) for u in self.a}),
                "B_items": len({(u.store, u.item) for u in self.b})}


def build_contrast(stores: Sequence[ActivationStore], spec: ContrastSpec | str, aggregate: str,
                   *, split_key: str = "auto") -> ContrastSet:
    """Units of group A and B from ``stores`` (checked before any tensor is read)."""
    spec = ContrastSpec.parse(spec) if isinstance(spec, str) else spec
    if aggregate not in AGGREGATIONS:
        raise unknown("aggregation", aggregate, AGGREGATIONS)
    if not stores:
        raise MechReasonError("no activation stores given")
    widths = {s.d_model for s in stores}
    if len(widths) != 1:
        raise MechReasonError(f"stores have different widths (d_model {sorted(widths)}); "
                              "they must come from one model")
    hooks = [h for h in stores[0].hooks if all(h in s.hooks for s in stores[1:])]
    if not hooks:
        raise MechReasonError("the stores share no captured hook")
    known = sorted(set(DERIVED_KEYS) | {k for s in stores for it in s.items for k in it
                                        if k not in _SENTENCE_FIELDS})
    if spec.key not in known:
        raise unknown("contrast key", spec.key, known)
    if spec.key == "label" and aggregate not in SENTENCE_AGGREGATIONS:
        raise MechReasonError(f"key 'label' belongs to sentences; use an aggregation in "
                              f"{SENTENCE_AGGREGATIONS}, not {aggregate!r}")
    key = _split_key(stores, split_key)
    length = _length_buckets(stores)
    units = [u for i, s in enumerate(stores) for u in _units(s, i, aggregate, key, length[i])]
    a, b = _assign(units, spec)
    return ContrastSet(spec=spec, aggregate=aggregate, hooks=hooks, a=a, b=b,
                       stores=list(stores), split_key=key)


def _split_key(stores: Sequence[ActivationStore], split_key: str) -> str:
    items = [it for s in stores for it in s.items]
    if split_key == "auto":
        return next(k for k in SPLIT_KEYS if all(it.get(k) is not None for it in items))
    if not all(split_key in it for it in items):
        raise unknown("split key (an item field)", split_key,
                      sorted({k for it in items for k in it}))
    return split_key


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "null" if v is None else str(v)


def _matches(unit: Unit, key: str, value: str) -> bool:
    got = unit.keys.get(key)
    if key == "label":
        return value in (got or ())
    return _fmt(got) == value


def _assign(units: list[Unit], spec: ContrastSpec) -> tuple[list[Unit], list[Unit]]:
    a = [u for u in units if _matches(u, spec.key, spec.a)]
    if spec.b is None:
        b = [u for u in units if not _matches(u, spec.key, spec.a)]
    else:
        b = [u for u in units if _matches(u, spec.key, spec.b)
             and not _matches(u, spec.key, spec.a)]  # a label can tag both: drop from B
    for name, group, value in (("A", a, spec.a), ("B", b, spec.b)):
        if not group:
            seen = sorted({x for u in units for x in _values(u, spec.key)})
            what = f"value {value!r}" if value is not None else f"anything but {spec.a!r}"
            raise MechReasonError(
                f"group {name} of contrast {spec} is empty: none of the {len(units)} units "
                f"has {spec.key} {what}; values seen: {seen[:20]}")
    return a, b


def _values(u: Unit, key: str) -> list[str]:
    got = u.keys.get(key)
    return list(got or ()) if key == "label" else [_fmt(got)]


def _length_buckets(stores: Sequence[ActivationStore]) -> list[dict[str, str]]:
    """Per store, item -> its tercile of generated-token (or token) counts over all stores."""
    lens = [{it["item"]: it["n_tokens"] - (it.get("prompt_len") or 0) for it in s.items}
            for s in stores]
    pooled = [n for d in lens for n in d.values()]
    if not pooled:
        return [{} for _ in stores]
    q = torch.quantile(torch.tensor(pooled, dtype=torch.float64),
                       torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)).tolist()
    return [{k: "short" if n < q[0] else "long" if n > q[1] else "medium" for k, n in d.items()}
            for d in lens]


def _units(store: ActivationStore, s: int, aggregate: str, split_key: str,
           length: dict[str, str]) -> list[Unit]:
    tokens: dict[str, dict[int, int]] = {}  # item -> pos -> row number
    means: dict[tuple[str, int], int] = {}  # (item, sentence) -> row of a span mean
    for n, row in enumerate(store.rows):
        if row["pos"] >= 0:
            tokens.setdefault(row["item"], {})[row["pos"]] = n
        elif row.get("sentence") is not None:
            means[(row["item"], row["sentence"])] = n
    out: list[Unit] = []
    for it in store.items:
        base = {k: v for k, v in it.items() if k not in _SENTENCE_FIELDS}
        base["length"] = length.get(it["item"])
        made = _item_units(store, it, aggregate, tokens.get(it["item"], {}), means)
        for sentence, rows in made:
            keys = dict(base, phase=store.rows[rows[0]].get("phase"))
            if sentence is not None:
                keys["label"] = _sentence_tags(it, sentence)
            out.append(Unit(s, it["item"], sentence, tuple(rows), str(it[split_key]), keys))
    if not out:
        raise MechReasonError(_no_units_message(store, aggregate))
    return out


def _sentence_tags(it: dict[str, Any], sentence: int) -> list[str]:
    """A sentence's labels, plus its behaviour cues when the capture kept them."""
    tags: list[str] = []
    for field in ("sentence_labels", "sentence_behaviours"):
        per = it.get(field) or []
        tags += [t for t in (per[sentence] if sentence < len(per) else []) if t not in tags]
    return tags


def _item_units(store: ActivationStore, it: dict[str, Any], aggregate: str,
                pos_row: dict[int, int], means: dict[tuple[str, int], int]
                ) -> list[tuple[int | None, list[int]]]:
    """(sentence index or None, row numbers to average) for each unit of one item."""
    p = it.get("prompt_len")
    if aggregate in ("first-generated", "last-prompt"):
        if p is None and aggregate == "first-generated":
            return []
        target = (it["n_tokens"] - 1 if p is None else p - 1) if aggregate == "last-prompt" else p
        return [(None, [pos_row[target]])] if target in pos_row else []
    if aggregate == "reasoning-mean":
        rows = [r for _, r in sorted(pos_row.items()) if store.rows[r].get("phase") == "reasoning"]
        return [(None, rows)] if rows else []
    out: list[tuple[int | None, list[int]]] = []
    for i, (start, end) in enumerate(it.get("sentences") or []):
        lo, hi = ((max(0, start + WINDOW[0]), start + WINDOW[1])
                  if aggregate == "sentence-start" else (start, end))
        rows = [pos_row[q] for q in range(lo, min(hi, it["n_tokens"])) if q in pos_row]
        if aggregate == "sentence-mean" and not rows and (it["item"], i) in means:
            rows = [means[(it["item"], i)]]
        if rows:
            out.append((i, rows))
    return out


def _no_units_message(store: ActivationStore, aggregate: str) -> str:
    cap = store.cfg.get("capture", {})
    return (f"store {str(store.root)!r} has no rows for aggregation {aggregate!r} (it was "
            f"captured with positions={cap.get('positions')!r}, "
            f"aggregate={cap.get('aggregate')!r}); {_needs(aggregate)}")


def _needs(aggregate: str) -> str:
    return {
        "first-generated": "it needs trace records captured with positions all, generated or "
                           "first-generated and aggregate token",
        "last-prompt": "it needs the last prompt token (positions all or prompt, aggregate token)",
        "reasoning-mean": "it needs trace records with token rows of the reasoning phase",
        "sentence-start": "it needs trace records with sentences and token rows",
        "sentence-mean": "it needs trace records with sentences (token rows or aggregate mean)",
    }[aggregate]
