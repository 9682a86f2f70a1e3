"""SAE stage, evaluation: reconstruction (fraction of variance unexplained, L0, dead and
dense latents) over streamed activations, and "loss recovered": the next-token loss with
the SAE's reconstruction spliced into the model at its hook, against the clean model
and zero ablation (Bricken et al. 2023; Gao et al. 2024):

    loss recovered = (L_zero - L_sae) / (L_zero - L_clean)

Splicing goes through :func:`mechreason.model.hooks.hooks_context`. Position 0 (BOS / the
first token, an attention sink whose norm is far off the rest) is left clean by
default, as training leaves it out (``skip_first``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from mechreason.errors import MechReasonError
from mechreason.model.engine import pad_batch
from mechreason.sae.model import SparseAutoencoder


@torch.no_grad()
def reconstruction_metrics(sae: SparseAutoencoder, batches: Iterable[Tensor], *,
                           dense_threshold: float = 0.1) -> dict[str, float]:
    """FVU (against the global mean), MSE, L0, and the fractions of latents that never
    fire (dead) or fire on more than ``dense_threshold`` of rows (dense)."""
    n, sse, l0 = 0, 0.0, 0.0
    s1: Tensor | None = None
    s2 = 0.0
    fires = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    for x in batches:
        x = x.float()
        z = sae.encode(x)
        x_hat = sae.decode(z)
        sse += float((x - x_hat).pow(2).sum())
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 += float(x.pow(2).sum())
        active = z > 0
        l0 += float(active.sum())
        fires += active.sum(0)
        n += len(x)
    if n == 0 or s1 is None:
        raise MechReasonError("no activation rows to evaluate on")
    var = s2 - float(s1.pow(2).sum()) / n
    freq = fires.float() / n
    return {"rows": n, "fvu": sse / max(var, 1e-12), "mse": sse / n, "l0": l0 / n,
            "dead_fraction": float((fires == 0).float().mean()),
            "dense_fraction": float((freq > dense_threshold).float().mean())}


def _ce(logits: Tensor, ids: Tensor, mask: Tensor) -> tuple[float, int]:
    """Summed next-token cross-entropy over real (unpadded) targets, and their count."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tgt = ids[:, 1:]
    nll = -lp.gather(-1, tgt[..., None]).squeeze(-1)
    keep = mask[:, 1:].bool() & mask[:, :-1].bool()
    return float(nll[keep].sum()), int(keep.sum())


@torch.no_grad()
def loss_recovered(model: Any, sae: SparseAutoencoder, hook: str, sequences: Sequence[list[int]],
                   *, batch_size: int = 8, skip_first: bool = True) -> dict[str, float]:
    """Mean next-token loss clean, with the SAE spliced in at ``hook``, and with ``hook``
    zero-ablated, over ``sequences`` (token ids), and the fraction recovered."""
    from mechreason.model.hooks import hooks_context
    from mechreason.sae.io import check_sae_fits

    check_sae_fits(sae, model, hook)
    if not sequences:
        raise MechReasonError("loss recovered needs at least one token sequence")
    sae = sae.to(model.device)
    start = 1 if skip_first else 0

    def splice(act: Tensor) -> Tensor:
        out = act.clone()
        out[:, start:] = sae.decode(sae.encode(act[:, start:])).to(act.dtype)
        return out

    def zero(act: Tensor) -> Tensor:
        out = act.clone()
        out[:, start:] = 0
        return out

    totals = {"clean": 0.0, "sae": 0.0, "zero": 0.0}
    count = 0
    for b in range(0, len(sequences), batch_size):
        ids, mask = pad_batch(sequences[b:b + batch_size], model.pad_id, left=False,
                              device=model.device)
        for name, fn in (("clean", None), ("sae", splice), ("zero", zero)):
            with hooks_context(model, {hook: fn} if fn else {}):
                logits = model.hf(input_ids=ids, attention_mask=mask, use_cache=False).logits
            s, c = _ce(logits, ids, mask)
            totals[name] += s
        count += c
    loss = {k: v / max(count, 1) for k, v in totals.items()}
    gap = loss["zero"] - loss["clean"]
    return {"loss_clean": loss["clean"], "loss_sae": loss["sae"], "loss_zero": loss["zero"],
            "loss_recovered": (loss["zero"] - loss["sae"]) / gap if gap else float("nan"),
            "ce_increase": loss["sae"] - loss["clean"], "tokens": count}


def split_items(item_ids: Iterable[str], holdout: float) -> tuple[set[str], set[str]]:
    """Deterministic train / held-out split of item ids (by a hash of the id), so training
    and evaluation agree without sharing state."""
    train: set[str] = set()
    held: set[str] = set()
    for it in item_ids:
        (held if zlib.crc32(it.encode()) % 10_000 < holdout * 10_000 else train).add(it)
    return train, held


def store_rows(store: Any, items: set[str] | None = None, *, skip_first: bool = True) -> list[int]:
    """Row numbers of ``store`` for the given items (all if None), leaving out position 0."""
    return [n for n, r in enumerate(store.rows)
            if (items is None or r["item"] in items) and not (skip_first and r["pos"] == 0)]
