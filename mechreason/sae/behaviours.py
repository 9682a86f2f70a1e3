"""SAE stage, unsupervised behaviour discovery (Venhoff et al. 2025b, "Base Models Know
How to Reason, Thinking Models Learn When"): sentence activations (the mean over each
sentence's tokens), centred and L2-normalised, are clustered by a small top-k SAE (k=3,
a handful of latents; each sentence goes to its most active latent) or by k-means.
Each cluster is reported with example sentences, its overlap with the rule-based
sentence labels, and a steerable direction: the cluster's mean raw activation minus
the mean over all sentences (difference of means, as in Venhoff et al. 2025a).
"""

from __future__ import annotations

import math
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mechreason.errors import MechReasonError
from mechreason.sae.config import BehaviourConfig


def sentence_activations(store: Any, hook: str, *, phase: str | None = "reasoning"
                         ) -> tuple[Tensor, list[tuple[str, int]]]:
    """One vector per (item, sentence): the store's sentence-mean rows if it has them,
    else the mean of its token rows. Returns (n, d) and the (item, sentence) keys."""
    mean_rows = [n for n, r in enumerate(store.rows)
                 if r["pos"] == -1 and r.get("sentence") is not None
                 and (phase is None or r.get("phase") == phase)]
    if mean_rows:
        x = store.load(hook, mean_rows)
        return x, [(store.rows[n]["item"], int(store.rows[n]["sentence"])) for n in mean_rows]
    keys: dict[tuple[str, int], int] = {}
    tok_rows = []
    for n, r in enumerate(store.rows):
        if r["pos"] >= 0 and r.get("sentence") is not None and (phase is None or r.get("phase") == phase):
            keys.setdefault((r["item"], int(r["sentence"])), len(keys))
            tok_rows.append(n)
    if not keys:
        raise MechReasonError(f"the store has no sentence rows{'' if phase is None else f' in phase {phase!r}'}"
                              "; capture trace records (with sentences) first")
    sums = torch.zeros(len(keys), store.d_model)
    counts = torch.zeros(len(keys))
    x = store.load(hook, tok_rows)
    idx = torch.tensor([keys[(store.rows[n]["item"], int(store.rows[n]["sentence"]))]
                        for n in tok_rows])
    sums.index_add_(0, idx, x)
    counts.index_add_(0, idx, torch.ones(len(idx)))
    return sums / counts[:, None], list(keys)


def normalise(x: Tensor) -> Tensor:
    """Centre, then L2-normalise each row (Venhoff et al. 2025b)."""
    c = x - x.mean(0)
    return c / c.norm(dim=1, keepdim=True).clamp_min(1e-8)


def kmeans(x: Tensor, n: int, *, seed: int = 0, iters: int = 50) -> Tensor:
    """Spherical k-means with k-means++ seeding; returns each row's cluster."""
    g = torch.Generator().manual_seed(seed)
    centres = [x[int(torch.randint(len(x), (1,), generator=g))]]
    for _ in range(1, n):
        d = torch.cdist(x, torch.stack(centres)).min(1).values.pow(2)
        centres.append(x[int(torch.multinomial(d / d.sum(), 1, generator=g))])
    c = torch.stack(centres)
    assign = torch.zeros(len(x), dtype=torch.long)
    for _ in range(iters):
        assign = (x @ c.T).argmax(1)
        for j in range(n):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0) / members.mean(0).norm().clamp_min(1e-8)
    return assign


def sae_clusters(x: Tensor, cfg: BehaviourConfig) -> tuple[Tensor, Tensor]:
    """Train a small top-k SAE on ``x`` (in memory); each row's cluster is its most active
    latent. Returns (assignments, activations)."""
    from mechreason.sae.train import TrainConfig, tensor_source, train_sae

    tc = TrainConfig(arch="topk", d_sae=cfg.n_clusters, k=cfg.k, batch_size=min(256, len(x)),
                     epochs=cfg.epochs, lr=1e-3, warmup_steps=5, seed=cfg.seed,
                     dead_tokens=max(len(x), 1), init_rows=len(x), checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        sae, _ = train_sae(tensor_source(x, tc.batch_size, seed=cfg.seed), tc, tmp, progress=False)
    with torch.no_grad():
        z = sae.encode(x)
    return z.argmax(1), z


def label_overlap(assign: Tensor, labels: Sequence[Sequence[str]], n: int) -> dict[str, Any]:
    """Per cluster, its label counts and best label (precision, recall); overall, the
    normalised mutual information between clusters and each sentence's first label."""
    per = []
    totals = Counter(t for ls in labels for t in ls)
    for j in range(n):
        members = [labels[i] for i in (assign == j).nonzero().flatten().tolist()]
        c = Counter(t for ls in members for t in ls)
        best = c.most_common(1)[0][0] if c else None
        per.append({"counts": dict(c.most_common()), "best_label": best,
                    "precision": c[best] / len(members) if best else 0.0,
                    "recall": c[best] / totals[best] if best else 0.0})
    first = [ls[0] if ls else "(none)" for ls in labels]
    return {"clusters": per, "nmi_first_label": nmi(assign.tolist(), first)}


def nmi(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Normalised mutual information (arithmetic-mean normalisation)."""
    n = len(a)
    if n == 0:
        return float("nan")
    ca, cb, cab = Counter(a), Counter(b), Counter(zip(a, b))
    mi = sum(v / n * math.log(v * n / (ca[x] * cb[y])) for (x, y), v in cab.items())
    h = [-sum(v / n * math.log(v / n) for v in c.values()) for c in (ca, cb)]
    den = (h[0] + h[1]) / 2
    return mi / den if den > 0 else 0.0


def cluster_directions(raw: Tensor, assign: Tensor, n: int) -> Tensor:
    """(n, d): cluster mean of raw sentence activations minus the overall mean."""
    overall = raw.mean(0)
    out = torch.zeros(n, raw.shape[1])
    for j in range(n):
        m = assign == j
        if m.any():
            out[j] = raw[m].mean(0) - overall
    return out


def discover_behaviours(store: Any, hook: str, cfg: BehaviourConfig) -> dict[str, Any]:
    """Cluster a store's sentences; returns assignments, directions and the report."""
    raw, keys = sentence_activations(store, hook, phase=cfg.phase)
    if len(raw) < cfg.n_clusters:
        raise MechReasonError(f"{len(raw)} sentences cannot make {cfg.n_clusters} clusters")
    x = normalise(raw)
    if cfg.method == "kmeans":
        assign, strength = kmeans(x, cfg.n_clusters, seed=cfg.seed), None
    else:
        assign, z = sae_clusters(x, cfg)
        strength = z.max(1).values
    labels = [_labels(store, it, s) for it, s in keys]
    overlap = label_overlap(assign, labels, cfg.n_clusters)
    dirs = cluster_directions(raw, assign, cfg.n_clusters)
    clusters = []
    for j in range(cfg.n_clusters):
        idx = (assign == j).nonzero().flatten()
        if strength is not None:
            idx = idx[strength[idx].argsort(descending=True)]
        clusters.append({"cluster": j, "size": len(idx),
                         "examples": [{"item": keys[i][0], "sentence": keys[i][1]}
                                      for i in idx[:cfg.n_examples].tolist()],
                         "direction_norm": float(dirs[j].norm()), **overlap["clusters"][j]})
    return {"assign": assign, "keys": keys, "directions": dirs, "clusters": clusters,
            "nmi_first_label": overlap["nmi_first_label"], "n_sentences": len(raw)}


def _labels(store: Any, item: str, sentence: int) -> list[str]:
    labs = store.item(item).get("sentence_labels") or []
    return [str(t) for t in labs[sentence]] if sentence < len(labs) else []


def save_behaviours(out: Path, res: dict[str, Any], cfg: BehaviourConfig, store: Any, hook: str,
                    model: Any = None, input_file: Any = None) -> None:
    """Write a :func:`discover_behaviours` result: ``clusters.json``, ``assignments.json``,
    ``directions.safetensors`` (every cluster's direction) and one direction directory per
    cluster (``cluster_J/``, written by the directions stage's own writer, so the steering
    stage reads it like any other direction). With ``model``, each example sentence gets
    its text (token ids from the store, or from ``input_file`` for an older store)."""
    from mechreason.artifacts import artifact_path, save_tensors, write_json, write_meta
    from mechreason.directions.io import DirectionSet, save_direction

    if model is not None:
        items = store.token_ids(model, input_file)
        for c in res["clusters"]:
            for ex in c["examples"]:
                s, e = store.item(ex["item"])["sentences"][ex["sentence"]]
                ex["text"] = str(model.tokenizer.decode(items[ex["item"]][s:e])).strip()
    dirs = res["directions"]
    save_tensors(artifact_path(out, "behaviour_directions"),
                 {f"cluster_{j}": dirs[j].contiguous() for j in range(len(dirs))})
    for j in range(len(dirs)):
        ds = DirectionSet(vectors=dirs[j][None].float(), hooks=[hook],
                          method=f"behaviour-{cfg.method}", contrast=f"cluster={j}:all",
                          best_hook=hook, model=store.cfg.get("model"))
        save_direction(out / f"cluster_{j}", ds, model=model, stage="behaviours")
    write_json(artifact_path(out, "cfg"), {"acts": str(store.root), "hook": hook,
                                           "behaviours": cfg})
    write_json(artifact_path(out, "clusters"), {
        "n_sentences": res["n_sentences"], "nmi_first_label": res["nmi_first_label"],
        "clusters": res["clusters"]})
    write_json(artifact_path(out, "assignments"),
               [{"item": it, "sentence": s, "cluster": int(c)}
                for (it, s), c in zip(res["keys"], res["assign"])])
    write_meta(out, model, stage="behaviours", hook=hook, model_name=store.cfg.get("model"))
