"""Reconstruction metrics of this SAE on the items held out from its training, per
capture store and pooled over all of them (FVU against the pooled mean), with the
evaluation code of ``mechreason sae eval`` (``reconstruction_metrics``, the same
hash split of item ids and the same rows: position 0 left out).

    python sae_checkpoints/smollm2-135m-instruct-l15-topk/heldout_fvu.py \
        data/sae/acts_traces data/sae/acts_plain
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from mechreason.activations import ActivationStore
from mechreason.artifacts import read_json
from mechreason.sae.evaluate import reconstruction_metrics, split_items, store_rows
from mechreason.sae.io import load_sae

HERE = Path(__file__).parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("acts", nargs="+", help="the capture stores the SAE was trained on")
    a = ap.parse_args()
    sae = load_sae(HERE)
    holdout = read_json(HERE / "cfg.json")["metadata"]["mechreason"]["holdout"]
    hook = sae.cfg.hook
    assert hook is not None
    parts = []
    for root in a.acts:
        store = ActivationStore(root)
        held = split_items([it["item"] for it in store.items], holdout)[1]
        parts.append((root, store, store_rows(store, held), len(held)))

    def batches(chosen):
        return itertools.chain.from_iterable(
            s.iter_batches(hook, 4096, shuffle=False, rows=rows) for _, s, rows, _ in chosen)

    out = {root: {"items": n, **reconstruction_metrics(sae, batches([p]))}
           for p in parts for root, _, _, n in [p]}
    out["all held-out items"] = {"items": sum(p[3] for p in parts),
                                 **reconstruction_metrics(sae, batches(parts))}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
