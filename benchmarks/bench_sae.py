"""B3: SAE training tokens/s, ours / SAELens's trainer at its best setting, on the same
real cached activations.

Data: layer-15 residuals (``blocks.15.hook_resid_post``) of the default model
``smollm2-135m-instruct`` on the plain GSM8K text the shipped SAE was trained on, a
``mechreason capture`` store at ``MECHREASON_B3_ACTS`` (default ``data/sae/acts_plain``,
gitignored; built by the shipped SAE card's first and fourth commands, see
docs/sae.md). Position 0 of each item (the attention sink) is left out, as in
``mechreason sae train``. ``N_BATCHES`` batches are read once, before timing, and
every arm cycles through the same ones in the same order.

Both arms train a TopK SAE with the AuxK loss, d_in 576, d_sae 4608 (expansion 8),
k 32, batch 1024, Adam (0.9, 0.999) at a constant lr 4e-4, float32, CPU, gradient-norm
clip 1. Ours keeps decoder rows at unit norm (parallel-gradient removal and a renorm
every step). SAELens runs with ``rescale_acts_by_decoder_norm=False`` in both of its
arms: with its default ``True`` the sparse path fails in the backward pass on CPU
(``aten::view`` on a SparseCPU tensor, SAELens 6.54.12), and ``False`` does less work
than ours (no decoder-norm handling at all; the dense arm's speed measured the same
with either), so the ratio is if anything in SAELens's favour. What is timed is the
training step only, side by side (:func:`benchmarks.harness.interleaved`, three arms):

- ours: ``mechreason.sae.train._train_step`` (forward, losses, backward, parallel-grad
  removal, clip, Adam, decoder renorm, dead-latent bookkeeping, batch metrics);
- SAELens 6's ``SAETrainer.step`` (the body of ``SAETrainer.fit`` without logging or
  checkpoints: forward, MSE + AuxK, backward, clip, Adam, LR schedule, dead-latent
  bookkeeping) on a ``TopKTrainingSAE``, once with ``use_sparse_activations=False`` and
  once with ``True`` (its docstring recommends it for small k in float32). B3's ratio is
  against the faster of the two (lower median); both are recorded as their own figures.

B3 is the steady state with no dead latents (AuxK off in both); B3aux marks every
latent dead-eligible from the start (SAELens ``dead_feature_window=0``, ours
``dead_tokens=0``), so both also pay for AuxK on every step.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from benchmarks.harness import Figure, figure, interleaved

FIGURES = ["B3", "B3aux"]
D_IN, EXPANSION, K, BATCH, LR = 576, 8, 32, 1024, 4e-4
STEPS_PER_REPEAT, N_BATCHES = 4, 16
HOOK = "blocks.15.hook_resid_post"
DEFAULT_ACTS = Path(__file__).parent.parent / "data" / "sae" / "acts_plain"


def acts_path() -> Path:
    return Path(os.environ.get("MECHREASON_B3_ACTS") or DEFAULT_ACTS)


def _batches(n: int) -> list[torch.Tensor]:
    """``n`` batches of real layer-15 activations (position 0 left out)."""
    from mechreason.activations import ActivationStore
    from mechreason.sae.evaluate import store_rows

    root = acts_path()
    if not (root / "cfg.json").is_file():
        raise SystemExit(
            f"B3 needs cached layer-15 activations at {root} (or MECHREASON_B3_ACTS): run "
            "sae_checkpoints/smollm2-135m-instruct-l15-topk/make_data.py --n-traces 0 "
            "--n-plain 536 and its README's plain-text capture command")
    store = ActivationStore(root)
    it = store.iter_batches(HOOK, BATCH, shuffle=True, seed=0, rows=store_rows(store))
    out = [b for _, b in zip(range(n), it) if len(b) == BATCH]
    if len(out) < n:
        raise SystemExit(f"{root} holds fewer than {n} batches of {BATCH} rows")
    return out


def _cycle(batches: list[torch.Tensor], step):
    """An arm: STEPS_PER_REPEAT calls of ``step(batch)``, cycling through ``batches``."""
    pos = [0]

    def arm() -> None:
        for _ in range(STEPS_PER_REPEAT):
            step(batches[pos[0] % len(batches)])
            pos[0] += 1

    return arm


def _ours(batches: list[torch.Tensor], dead_tokens: int):
    from mechreason.sae.model import SAEConfig, SparseAutoencoder
    from mechreason.sae.train import TrainConfig, _lr, _Run, _train_step

    cfg = TrainConfig(arch="topk", expansion=EXPANSION, k=K, lr=LR, batch_size=BATCH,
                      dead_tokens=dead_tokens, warmup_steps=0)
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=EXPANSION * D_IN, k=K))
    sae.init_from_data(torch.cat(batches[:2]), median_iters=0)
    run = _Run(sae, cfg)

    def step(x: torch.Tensor) -> None:
        _train_step(run, x, _lr(cfg, run.step, 10**9))
        run.step += 1

    return _cycle(batches, step)


def _theirs(batches: list[torch.Tensor], dead_window: int, sparse: bool):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(
        d_in=D_IN, d_sae=EXPANSION * D_IN, k=K, aux_loss_coefficient=1 / 32,
        use_sparse_activations=sparse, rescale_acts_by_decoder_norm=False, dtype="float32",
        device="cpu"))
    tcfg = SAETrainerConfig(total_training_samples=10**9, train_batch_size_samples=BATCH, lr=LR,
                            lr_end=LR, adam_beta1=0.9, adam_beta2=0.999, autocast=False,
                            dead_feature_window=dead_window, device="cpu")
    trainer = SAETrainer(tcfg, sae, data_provider=iter(batches))

    def step(x: torch.Tensor) -> None:
        trainer.step(x)
        trainer.n_training_steps += 1

    return _cycle(batches, step)


def _figures(name: str, batches: list[torch.Tensor], dead: bool) -> list[Figure]:
    t = interleaved({"ours": _ours(batches, 0 if dead else 10**12),
                     "sae_lens_dense": _theirs(batches, 0 if dead else 10**9, sparse=False),
                     "sae_lens_sparse": _theirs(batches, 0 if dead else 10**9, sparse=True)})
    best = min(("sae_lens_dense", "sae_lens_sparse"), key=t.median)
    sizes = {"d_in": D_IN, "d_sae": D_IN * EXPANSION, "k": K, "batch": BATCH, "lr": LR,
             "steps_per_call": STEPS_PER_REPEAT, "batches": len(batches), "dtype": "float32",
             "acts": f"{HOOK} of smollm2-135m-instruct on GSM8K plain text ({acts_path().name})",
             "dead_latents": "all eligible (AuxK every step)" if dead else "none (AuxK off)",
             "sae_lens_dense_median_s": t.median("sae_lens_dense"),
             "sae_lens_sparse_median_s": t.median("sae_lens_sparse"), "better_sae_lens_arm": best}
    units = STEPS_PER_REPEAT * BATCH
    other = {"sae_lens_dense": "off", "sae_lens_sparse": "on"}
    note = (f"against SAELens's faster arm, use_sparse_activations={other[best]} "
            f"(ratios to the dense / sparse arms: "
            f"{t.median('sae_lens_dense') / t.median('ours'):.2f} / "
            f"{t.median('sae_lens_sparse') / t.median('ours'):.2f})")
    figs = [figure(name, "SAE training tokens/s / SAELens SAETrainer.step, its faster arm", t,
                   "ours", best, units, target=1.5, sizes=sizes, note=note)]
    for arm, flag in other.items():
        figs.append(figure(f"{name}-sparse-{flag}",
                           f"SAE training tokens/s / SAELens use_sparse_activations={flag}",
                           t, "ours", arm, units, sizes=sizes))
    return figs


def run(ids: list[str]) -> list[Figure]:
    batches = _batches(N_BATCHES)
    return [f for i in ids for f in _figures(i, batches, dead=(i == "B3aux"))]
