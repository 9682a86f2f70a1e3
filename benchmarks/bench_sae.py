"""B3: SAE training tokens/s, ours / SAELens's trainer, on identical cached activations.

Both arms train a TopK SAE with the AuxK loss, d_in 576 (SmolLM2-135M's residual
stream), d_sae 4608 (expansion 8), k 32, Adam at the same learning rate, batch 1024,
on the same batches read once from an activation store (``MECHREASON_B3_ACTS``, a
``mechreason capture`` directory holding ``blocks.15.hook_resid_post``; without it,
seeded Gaussian rows of the same shape). The batches are loaded before timing.

What is timed is the training step only, side by side (benchmarks.harness.interleaved):
ours is ``mechreason.sae.train._train_step`` (forward, losses, backward, parallel-grad
removal, clip, Adam, decoder renorm, dead-latent bookkeeping); theirs is SAELens 6.54's
``SAETrainer.step`` (the body of ``SAETrainer.fit`` without logging or checkpoints:
forward, MSE + AuxK, backward, clip, Adam, LR schedule, dead-latent bookkeeping) on a
``TopKTrainingSAE``. SAELens's trainer is driven from cached activations through its
``data_provider`` argument (an iterator of batches), so no hub or model is involved.

B3 measures the steady state with no dead latents (AuxK off in both); B3aux marks every
latent dead-eligible from the start (SAELens ``dead_feature_window=0``, ours
``dead_tokens=0``), so both also pay for AuxK on every step.
"""

from __future__ import annotations

import os

import torch

from benchmarks.harness import Figure, figure, interleaved

FIGURES = ["B3", "B3aux"]
D_IN, EXPANSION, K, BATCH, LR = 576, 8, 32, 1024, 4e-4
STEPS_PER_REPEAT = 3
HOOK = "blocks.15.hook_resid_post"


def _batches(n: int) -> list[torch.Tensor]:
    """``n`` batches from the activation store (or a synthetic one on disk)."""
    from mechreason.activations import ActivationStore

    root = os.environ.get("MECHREASON_B3_ACTS")
    if root:
        store = ActivationStore(root)
        it = store.iter_batches(HOOK, BATCH, shuffle=True, seed=0)
        out = [b for _, b in zip(range(n), it) if len(b) == BATCH]
        if len(out) == n:
            return out
    g = torch.Generator().manual_seed(0)
    return [torch.randn(BATCH, D_IN, generator=g) * 3 + 1 for _ in range(n)]


def _ours(batches: list[torch.Tensor], dead_tokens: int):
    from mechreason.sae.model import SAEConfig, SparseAutoencoder
    from mechreason.sae.train import TrainConfig, _lr, _Run, _train_step

    cfg = TrainConfig(arch="topk", expansion=EXPANSION, k=K, lr=LR, batch_size=BATCH,
                      dead_tokens=dead_tokens, warmup_steps=0)
    sae = SparseAutoencoder(SAEConfig(d_in=D_IN, d_sae=EXPANSION * D_IN, k=K))
    sae.init_from_data(torch.cat(batches[:2]), median_iters=0)
    run = _Run(sae, cfg)
    pos = [0]

    def arm() -> None:
        for _ in range(STEPS_PER_REPEAT):
            _train_step(run, batches[pos[0] % len(batches)], _lr(cfg, run.step, 10**9))
            run.step += 1
            pos[0] += 1

    return arm


def _theirs(batches: list[torch.Tensor], dead_window: int):
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D_IN, d_sae=EXPANSION * D_IN, k=K,
                                                aux_loss_coefficient=1 / 32))
    tcfg = SAETrainerConfig(total_training_samples=10**9, train_batch_size_samples=BATCH, lr=LR,
                            lr_end=LR,
                            dead_feature_window=dead_window, device="cpu")
    trainer = SAETrainer(tcfg, sae, data_provider=iter(batches))
    pos = [0]

    def arm() -> None:
        for _ in range(STEPS_PER_REPEAT):
            trainer.step(batches[pos[0] % len(batches)])
            trainer.n_training_steps += 1
            pos[0] += 1

    return arm


def _figure(name: str, batches: list[torch.Tensor], dead: bool) -> Figure:
    t = interleaved({"ours": _ours(batches, 0 if dead else 10**12),
                     "sae_lens": _theirs(batches, 0 if dead else 10**9)})
    return figure(name, "SAE training tokens/s / SAELens SAETrainer.step", t, "ours", "sae_lens",
                  STEPS_PER_REPEAT * BATCH, target=1.5,
                  sizes={"d_in": D_IN, "d_sae": D_IN * EXPANSION, "k": K, "batch": BATCH,
                         "acts": os.environ.get("MECHREASON_B3_ACTS") or "synthetic Gaussian"})


def run(ids: list[str]) -> list[Figure]:
    batches = _batches(8)
    return [_figure(i, batches, dead=(i == "B3aux")) for i in ids]
