"""SAE stage, reasoning-feature ranking: small functions, each with its source.

- :func:`contrast_scores`: mean latent activation under chain-of-thought minus under
  direct answering, at the first generated token or over the generated span, ranked on
  one half of the problems and checked on the other (He et al. 2026, "reasoning as a
  latent mode").
- :func:`reason_scores`: ReasonScore (Galichin et al. 2025, "I Have Covered All the
  Bases Here"): activation in windows around reasoning words (1 token left, 2 right)
  relative to all latents, times the normalised entropy of the latent's activation
  across the word groups to the power alpha, minus the same share outside the windows.
- :func:`top_activations`: each latent's top-activating tokens with context and sentence.
- :func:`logit_lens`: a latent's decoder direction read through the final norm's gain
  and the unembedding (tokens it promotes and suppresses).
"""

from __future__ import annotations

import dataclasses
import math
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from mechreason.errors import MechReasonError
from mechreason.sae.config import FeaturesConfig
from mechreason.sae.model import SparseAutoencoder

REASON_WORDS = ("wait", "hmm", "alternatively", "maybe", "perhaps", "let me", "therefore",
                "however", "but", "another")
SPANS = ("first-generated", "generated")


def _batched_rows(store: Any, hook: str, rows: Sequence[int], bs: int = 2048
                  ) -> Iterator[tuple[list[int], Tensor]]:
    """(row numbers, activations) in ascending row order, streamed."""
    order = sorted(set(rows))
    off = 0
    for x in store.iter_batches(hook, bs, shuffle=False, rows=order):
        yield order[off:off + len(x)], x
        off += len(x)


class LatentContrast(NamedTuple):
    """Mean code of group A minus group B over independent units (traces or prompts)."""

    diff: Tensor
    """(d_sae,) mean over A's units minus mean over B's."""
    var_a: Tensor
    """(d_sae,) per-latent sample variance over A's units (0 with one unit)."""
    var_b: Tensor
    """The same over B's units."""
    n_a: int
    n_b: int

    @property
    def se(self) -> Tensor:
        """(d_sae,) Welch standard error of ``diff``."""
        return (self.var_a / self.n_a + self.var_b / self.n_b).sqrt()

    def order(self, top: int) -> list[int]:
        """The ``top`` latents by ``diff``, best first."""
        return self.diff.argsort(descending=True)[:top].tolist()

    def interval(self, latent: int, level: float = 0.95) -> tuple[float, float]:
        """Student-t interval of one latent's ``diff`` at its Welch-Satterthwaite degrees
        of freedom (valid at small n; NaN with fewer than two units in a group)."""
        from mechreason.stats import t_quantile, welch_df

        if min(self.n_a, self.n_b) < 2:
            return math.nan, math.nan
        va, vb = float(self.var_a[latent]), float(self.var_b[latent])
        q = t_quantile(welch_df(va, self.n_a, vb, self.n_b), level)
        d, e = float(self.diff[latent]), float(self.se[latent])
        return d - q * e, d + q * e


def latent_contrast(codes_a: Float[Tensor, "n_a d_sae"], codes_b: Float[Tensor, "n_b d_sae"]
                    ) -> LatentContrast:
    """The one cot-minus-direct latent ranking: ``codes_a`` (n_A, d_sae) and ``codes_b``
    (n_B, d_sae) hold one code vector per unit (a trace's mean code, or one prompt's
    code); used by :func:`contrast_scores`, the demo's feature stage and
    :func:`mechreason.steering.evaluate.contrast_latents`."""
    if not len(codes_a) or not len(codes_b):
        raise MechReasonError("a latent contrast needs at least one unit in each group")
    a, b = codes_a.float(), codes_b.float()

    def var(x: Tensor) -> Tensor:
        return x.var(0, unbiased=True) if len(x) > 1 else torch.zeros(x.shape[1])

    return LatentContrast(a.mean(0) - b.mean(0), var(a), var(b), len(a), len(b))


@torch.no_grad()
def trace_codes(sae: Any, store: Any, hook: str, rows: Sequence[int]
                ) -> Float[Tensor, "n_traces d_sae"]:
    """(n_traces, d_sae): each trace's mean SAE code over its ``rows`` (streamed)."""
    if not rows:
        raise MechReasonError("no activation rows selected (check styles and positions)")
    keys: dict[str, int] = {}
    item_of = [keys.setdefault(store.rows[r]["item"], len(keys)) for r in sorted(set(rows))]
    sums = torch.zeros(len(keys), int(sae.W_dec.shape[0]))
    counts = torch.bincount(torch.tensor(item_of, dtype=torch.long), minlength=len(keys)).float()
    off = 0
    for _, x in _batched_rows(store, hook, rows):
        idx = torch.tensor(item_of[off:off + len(x)], dtype=torch.long)
        sums.index_add_(0, idx, sae.encode(x).float())
        off += len(x)
    return sums / counts.unsqueeze(1)


def problem_key(item: Mapping[str, Any]) -> str:
    """The problem an item belongs to (so cot and direct traces of it split together)."""
    if item.get("problem_id") is not None:
        return str(item["problem_id"])
    iid, style = str(item["item"]), item.get("style")
    return iid[: -len(style) - 1] if style and iid.endswith(f":{style}") else iid


def contrast_rows(store: Any, style: str, span: str, problems: set[str] | None = None
                  ) -> list[int]:
    """Rows of ``style`` traces at the first generated token or over the generated span."""
    if span not in SPANS:
        from mechreason.errors import unknown

        raise unknown("contrast span", span, SPANS)
    out = []
    for n, r in enumerate(store.rows):
        it = store.item(r["item"])
        p = it.get("prompt_len")
        if it.get("style") != style or p is None or r["pos"] < 0:
            continue
        if problems is not None and problem_key(it) not in problems:
            continue
        if (r["pos"] == p) if span == "first-generated" else (r["pos"] >= p):
            out.append(n)
    return out


@dataclasses.dataclass
class ContrastResult:
    """cot-minus-direct scores: on all problems, and on two disjoint halves."""

    scores: Tensor
    """(d_sae,) mean under cot minus mean under direct (per-trace means), all problems."""
    discovery: Tensor
    """The same on the discovery half (used for ranking)."""
    heldout: Tensor
    """The same on the held-out half (the check)."""
    top: list[int]
    """Latents ranked by the discovery score, best first."""
    heldout_rank_corr: float
    """Spearman correlation of discovery and held-out scores over the latents active in
    either half."""
    heldout_sign_agreement: float
    """Fraction of the top latents whose held-out score is also positive."""


def contrast_scores(sae: SparseAutoencoder, store: Any, hook: str, *, span: str = "first-generated",
                    cot: str = "cot", direct: str = "direct", n_top: int = 20) -> ContrastResult:
    """He et al. 2026 contrast score with a held-out half (split by problem hash): the
    mean over traces of each trace's mean code (so a long trace does not dominate the
    generated span), cot minus direct, through :func:`latent_contrast`."""
    def styled(style: str) -> set[str]:
        return {problem_key(it) for it in store.items if it.get("style") == style}

    probs = styled(cot) & styled(direct)  # problems with both traces
    ordered = sorted(probs, key=lambda p: (zlib.crc32(p.encode()), p))
    half_a = set(ordered[0::2])  # balanced halves, fixed by the ids alone
    half_b = probs - half_a
    if not half_a or not half_b:
        styles = sorted({str(it.get("style")) for it in store.items})
        raise MechReasonError(f"contrast needs {cot!r} and {direct!r} traces of the same "
                              f"problems (two halves); found {len(probs)} such problem(s); "
                              f"styles in the store: {styles}")

    def diff(ps: set[str] | None) -> Tensor:
        return latent_contrast(trace_codes(sae, store, hook, contrast_rows(store, cot, span, ps)),
                               trace_codes(sae, store, hook, contrast_rows(store, direct, span, ps)),
                               ).diff

    full, disc, held = diff(probs), diff(half_a), diff(half_b)
    top = disc.argsort(descending=True)[:n_top].tolist()
    live = (disc != 0) | (held != 0)  # latents silent in both halves would tie at zero
    return ContrastResult(full, disc, held, top, spearman(disc[live], held[live]),
                          float((held[top] > 0).float().mean()))


def spearman(a: Tensor, b: Tensor) -> float:
    """Spearman rank correlation (average ranks are not needed for continuous scores)."""
    ra = a.argsort().argsort().float()
    rb = b.argsort().argsort().float()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den else float("nan")


def word_windows(tokenizer: Any, ids: Sequence[int], words: Sequence[str] = REASON_WORDS, *,
                 left: int = 1, right: int = 2) -> dict[str, set[int]]:
    """Token positions within ``left``/``right`` tokens of each occurrence of each word
    (whole words, case-insensitive; multi-word entries such as "let me" match as phrases)."""
    from mechreason.traces.sentences import decode_offsets

    text, spans = decode_offsets(tokenizer, ids)
    out: dict[str, set[int]] = {w: set() for w in words}
    for w in words:
        for m in re.finditer(rf"(?<![A-Za-z]){re.escape(w)}(?![A-Za-z])", text, re.IGNORECASE):
            toks = [j for j, (s, e) in enumerate(spans) if s < m.end() and e > m.start()]
            if toks:
                lo, hi = max(0, toks[0] - left), min(len(ids) - 1, toks[-1] + right)
                out[w].update(range(lo, hi + 1))
    return out


@dataclasses.dataclass
class ReasonScoreResult:
    """ReasonScore per latent, with the pieces it is made of."""

    scores: Tensor
    """(d_sae,) the ReasonScore."""
    entropy: Tensor
    """(d_sae,) normalised entropy across word groups (1 = spread evenly)."""
    mean_in: Tensor
    """(d_sae,) mean activation inside reasoning-word windows."""
    mean_out: Tensor
    """(d_sae,) mean activation elsewhere."""
    group_counts: dict[str, int]
    """Window rows per word group (groups with none are left out of the entropy)."""


@torch.no_grad()
def reason_scores(sae: SparseAutoencoder, store: Any, hook: str, tokens: Mapping[str, Sequence[int]],
                  tokenizer: Any, *, rows: Sequence[int] | None = None,
                  words: Sequence[str] = REASON_WORDS, alpha: float = 0.7,
                  left: int = 1, right: int = 2) -> ReasonScoreResult:
    """ReasonScore (Galichin et al. 2025) over token rows of ``store`` (default: every
    token row of items in ``tokens``); ``tokens`` maps item id to its token ids."""
    wins = {iid: word_windows(tokenizer, ids, words, left=left, right=right)
            for iid, ids in tokens.items()}
    if rows is None:
        rows = [n for n, r in enumerate(store.rows) if r["pos"] >= 0 and r["item"] in wins]
    g = len(words)
    s_group = torch.zeros(g, sae.cfg.d_sae)
    n_group = torch.zeros(g)
    s_in, s_out = torch.zeros(sae.cfg.d_sae), torch.zeros(sae.cfg.d_sae)
    n_in = n_out = 0
    for nums, x in _batched_rows(store, hook, rows):
        z = sae.encode(x)
        member = torch.zeros(len(nums), g, dtype=torch.bool)
        for j, n in enumerate(nums):
            r = store.rows[n]
            w = wins.get(r["item"], {})
            for gi, word in enumerate(words):
                member[j, gi] = r["pos"] in w.get(word, ())
        s_group += member.float().T @ z
        n_group += member.sum(0)
        inside = member.any(1)
        s_in += z[inside].sum(0)
        s_out += z[~inside].sum(0)
        n_in += int(inside.sum())
        n_out += int((~inside).sum())
    if n_in == 0 or n_out == 0:
        raise MechReasonError("no token falls in (or outside) a reasoning-word window; "
                              f"words: {list(words)}")
    mean_in, mean_out = s_in / n_in, s_out / n_out
    present = n_group > 0
    mu = s_group[present] / n_group[present, None]  # (groups present, d_sae)
    p = mu / mu.sum(0, keepdim=True).clamp_min(1e-12)
    ent = -(p * p.clamp_min(1e-12).log()).sum(0)
    ent = ent / math.log(int(present.sum())) if int(present.sum()) > 1 else torch.zeros_like(ent)
    score = (mean_in / mean_in.sum().clamp_min(1e-12)) * ent.clamp_min(0) ** alpha \
        - mean_out / mean_out.sum().clamp_min(1e-12)
    return ReasonScoreResult(score, ent, mean_in, mean_out,
                             {w: int(c) for w, c in zip(words, n_group.tolist())})


@torch.no_grad()
def top_activations(sae: SparseAutoencoder, store: Any, hook: str, latents: Sequence[int], *,
                    rows: Sequence[int] | None = None, n: int = 8) -> dict[int, list[tuple[float, int]]]:
    """Each latent's ``n`` largest activations as (value, row number), streamed."""
    lat = torch.as_tensor(list(latents), dtype=torch.long)
    rows = [i for i, r in enumerate(store.rows) if r["pos"] >= 0] if rows is None else rows
    best_v = torch.full((len(lat), 0), float("-inf"))
    best_r = torch.zeros((len(lat), 0), dtype=torch.long)
    for nums, x in _batched_rows(store, hook, rows):
        z = sae.encode(x)[:, lat].T  # (latents, batch)
        v = torch.cat([best_v, z], 1)
        r = torch.cat([best_r, torch.as_tensor(nums).expand(len(lat), -1)], 1)
        keep = v.topk(min(n, v.shape[1]), dim=1)
        best_v, best_r = keep.values, r.gather(1, keep.indices)
    return {int(li): [(float(a), int(b)) for a, b in zip(best_v[i], best_r[i]) if a > 0]
            for i, li in enumerate(lat)}


def describe_row(store: Any, row: int, tokens: Mapping[str, Sequence[int]], tokenizer: Any,
                 *, context: int = 8) -> dict[str, Any]:
    """A row's item, position, token, surrounding text and sentence (if known)."""
    r = store.rows[row]
    out: dict[str, Any] = {"item": r["item"], "pos": r["pos"], "sentence": r.get("sentence")}
    ids = tokens.get(r["item"])
    if ids is not None and 0 <= r["pos"] < len(ids):
        p = r["pos"]
        out["token"] = tokenizer.decode([ids[p]])
        out["context"] = (tokenizer.decode(ids[max(0, p - context):p]) + "[[" + out["token"]
                          + "]]" + tokenizer.decode(ids[p + 1:p + 1 + context // 2]))
        spans = store.item(r["item"]).get("sentences")
        if spans and r.get("sentence") is not None:
            s, e = spans[r["sentence"]]
            out["sentence_text"] = tokenizer.decode(ids[s:e]).strip()
    return out


@torch.no_grad()
def logit_lens(sae: SparseAutoencoder, model: Any, latents: Sequence[int], *, n: int = 10
               ) -> dict[int, dict[str, list[str]]]:
    """Tokens each latent's decoder direction promotes and suppresses: the directions
    stage's lens (:func:`mechreason.directions.read.logit_lens`, the final norm's gain
    as the model applies it, ``1 + w`` on Gemma) on each decoder row."""
    from mechreason.directions.read import logit_lens as lens

    out = {}
    for li in latents:
        res = lens(model, sae.W_dec[li].detach(), k=n)
        out[int(li)] = {"promotes": [t.token for t in res.promoted],
                        "suppresses": [t.token for t in res.suppressed]}
    return out


def rank_features_to(out: Path, sae: Any, store: Any, hook: str, model: Any,
                     cfg: FeaturesConfig, *, input_file: str | None = None,
                     sae_path: str | None = None) -> dict[str, Any]:
    """``mechreason features``: rank latents by ``cfg.score`` (``contrast``: He et al.
    with a held-out half; ``reason``: ReasonScore), with each top latent's top activations
    and logit lens; writes ``scores.safetensors``, ``ranking.json``, ``cfg.json`` and
    ``meta.json`` into ``out``. Returns ``{"extra": ..., "top": ranking}``."""
    from mechreason.artifacts import artifact_path, save_tensors, write_json, write_meta

    score, span, top = cfg.score, cfg.span, cfg.top

    tokens = store.token_ids(model, input_file)
    if score == "reason" and not tokens:
        raise MechReasonError("--score reason needs the tokens: this store keeps no token ids "
                              "(written by an older mechreason); pass --input, the capture's "
                              "input file")
    rows: list[int] | None = None
    if score == "contrast":
        res = contrast_scores(sae, store, hook, span=span, n_top=top)
        scores, order = res.scores, res.top
        tensors = {"scores": res.scores, "discovery": res.discovery, "heldout": res.heldout}
        extra: dict[str, Any] = {"heldout_rank_corr": res.heldout_rank_corr,
                                 "heldout_sign_agreement_top": res.heldout_sign_agreement}
    else:
        rows = [n for n, r in enumerate(store.rows) if r["pos"] >= 0 and r["item"] in tokens
                and r.get("phase") in (None, "reasoning", "answer")]
        rs = reason_scores(sae, store, hook, tokens, model.tokenizer, rows=rows)
        scores, order = rs.scores, rs.scores.argsort(descending=True)[:top].tolist()
        tensors = {"scores": rs.scores, "entropy": rs.entropy, "mean_in": rs.mean_in,
                   "mean_out": rs.mean_out}
        extra = {"group_counts": rs.group_counts}
    acts = top_activations(sae, store, hook, order, rows=rows, n=5)
    lens = logit_lens(sae, model, order)
    ranking = []
    for li in order:
        entry = {"latent": li, "score": float(scores[li]), "logit_lens": lens[li],
                 "top": [{"act": v, **describe_row(store, r, tokens, model.tokenizer)}
                         for v, r in acts[li]]}
        if "heldout" in tensors:
            entry["heldout"] = float(tensors["heldout"][li])
        ranking.append(entry)
    save_tensors(artifact_path(out, "feature_scores"), {k: v.float() for k, v in tensors.items()})
    write_json(artifact_path(out, "cfg"), {"sae": sae_path, "acts": str(store.root),
                                           "score": score, "span": span, "hook": hook})
    write_json(artifact_path(out, "ranking"), {"score": score, **extra, "top": ranking})
    write_meta(out, model, stage="features", hook=hook)
    return {"extra": extra, "top": ranking}
