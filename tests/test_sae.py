"""SAE model, training and file format: planted atoms, SAELens round trips, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mechreason.errors import MechReasonError
from mechreason.sae.io import check_sae_fits, load_sae, save_sae
from mechreason.sae.model import SAEConfig, SparseAutoencoder, geometric_median
from mechreason.sae.train import TrainConfig, tensor_source, train_sae

ROOT = Path(__file__).resolve().parents[1]


def planted(n: int = 4096, d: int = 16, n_atoms: int = 24, active: int = 2, seed: int = 0):
    """Rows that are sparse positive sums of unit atoms, plus an offset and a little noise."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_atoms, generator=g)[:active] for _ in range(n)])
    coef = torch.rand(n, active, generator=g) + 0.5
    x = (coef[..., None] * atoms[idx]).sum(1) + 0.01 * torch.randn(n, d, generator=g) + 1.5
    return x, atoms


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_training_recovers_planted_atoms(arch, tmp_path):
    x, atoms = planted()
    cfg = TrainConfig(arch=arch, expansion=3, k=2, batch_size=128, epochs=6, lr=3e-3,
                      warmup_steps=10, dead_tokens=3000, l1_coeff=0.05, init_rows=2048)
    sae, summary = train_sae(tensor_source(x, cfg.batch_size), cfg, tmp_path, progress=False)
    w = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    best = (atoms @ w.T).max(dim=1).values
    assert (best > 0.9).float().mean() >= 0.9, best
    assert summary["final"]["fvu"] < 0.2
    if arch == "topk":
        assert summary["final"]["l0"] <= 2


def test_geometric_median_resists_outliers():
    x = torch.cat([torch.randn(101, 3) * 0.01 + torch.tensor([1.0, 2.0, 3.0]),
                   torch.full((40, 3), 100.0)])
    assert torch.allclose(geometric_median(x, iters=100), torch.tensor([1.0, 2.0, 3.0]), atol=0.05)
    assert torch.equal(geometric_median(x, iters=0), x.mean(0))


def _random_sae(arch: str, d_in: int = 7, d_sae: int = 11, seed: int = 3) -> SparseAutoencoder:
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae, arch=arch,  # type: ignore[arg-type]
                                      k=3 if arch == "topk" else None,
                                      hook="blocks.1.hook_resid_post", model="tiny-random"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        sae.norm_scale.fill_(1.7)
    return sae


@pytest.mark.parametrize("store_dtype", ["float32", "float16"])
@pytest.mark.parametrize("arch", ["topk", "relu", "jumprelu"])
def test_sae_lens_loads_ours_and_encodes_identically(arch, store_dtype, tmp_path):
    from sae_lens import SAE

    sae = _random_sae(arch)
    save_sae(sae, tmp_path, store_dtype=store_dtype)
    theirs = SAE.load_from_disk(tmp_path)
    ours = load_sae(tmp_path)
    x = torch.randn(5, 2, 7)
    with torch.no_grad():
        assert torch.equal(ours.encode(x), theirs.encode(x))
        z = ours.encode(x)
        assert torch.equal(ours.decode(z), theirs.decode(z))
        if store_dtype == "float32":  # the folded file encodes like the unfolded original
            assert torch.allclose(sae.encode(x), ours.encode(x), atol=1e-5)
            assert torch.allclose(sae.decode(sae.encode(x)), ours.decode(z), atol=1e-5)
    assert theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert ours.cfg.hook == sae.cfg.hook and ours.cfg.arch == arch


def _their_sae(arch: str, rescale: bool):
    from sae_lens import (
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )

    if arch == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=6, d_sae=13, k=4, rescale_acts_by_decoder_norm=rescale))
    elif arch == "standard":
        sae = StandardSAE(StandardSAEConfig(d_in=6, d_sae=13))
    else:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=6, d_sae=13))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.4)
    sae.cfg.metadata.hook_name = "blocks.2.hook_resid_post"
    return sae


@pytest.mark.parametrize(("arch", "rescale"), [("topk", False), ("topk", True),
                                               ("standard", False), ("jumprelu", False)])
def test_we_load_sae_lens_folders(arch, rescale, tmp_path):
    theirs = _their_sae(arch, rescale)
    theirs.save_model(tmp_path)
    ours = load_sae(tmp_path)
    x = torch.randn(9, 6)
    with torch.no_grad():
        z_theirs, z_ours = theirs.encode(x), ours.encode(x)
        assert torch.equal(z_ours > 0, z_theirs > 0)
        assert torch.allclose(z_ours, z_theirs, atol=1e-5)
        assert torch.allclose(ours.decode(z_ours), theirs.decode(z_theirs), atol=1e-5)
    assert ours.cfg.hook == "blocks.2.hook_resid_post"


def test_mismatched_sae_and_model_give_clear_errors(tiny, tmp_path):
    ok = _random_sae("topk", d_in=tiny.d_model)
    assert check_sae_fits(ok, tiny) == "blocks.1.hook_resid_post"
    with pytest.raises(MechReasonError, match=r"d_in=7 does not match .* d_model=64"):
        check_sae_fits(_random_sae("topk"), tiny)
    with pytest.raises(MechReasonError, match=r"trained on hook 'blocks\.1\.hook_resid_post'"):
        check_sae_fits(ok, tiny, "blocks.2.hook_resid_post")
    with pytest.raises(MechReasonError, match="out of range"):
        check_sae_fits(ok, tiny, "blocks.9.hook_resid_post")
    save_sae(_random_sae("relu"), tmp_path)
    with pytest.raises(MechReasonError, match="d_in=7"):
        load_sae(tmp_path, model=tiny)
    with pytest.raises(MechReasonError, match="no SAE folder"):
        load_sae(tmp_path / "nope")


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {root!r})
    from mechreason.sae.train import TrainConfig, tensor_source, train_sae
    torch.set_num_threads(1)
    x = torch.load({data!r})
    cfg = TrainConfig(**{cfg!r})
    def kill(step, _m):
        if step == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
    train_sae(tensor_source(x, cfg.batch_size), cfg, sys.argv[2], progress=False, on_step=kill)
""")


@pytest.mark.parametrize("arch", ["topk", "relu"])
def test_resume_after_kill_is_bit_identical(arch, tmp_path):
    x, _ = planted(n=600, d=8, n_atoms=12)
    torch.save(x, tmp_path / "x.pt")
    cfg = dict(arch=arch, expansion=2, k=2, batch_size=64, epochs=3, checkpoint_every=5,
               warmup_steps=3, dead_tokens=100, init_rows=256)
    script = tmp_path / "run.py"
    script.write_text(_KILL_SCRIPT.format(root=str(ROOT), data=str(tmp_path / "x.pt"), cfg=cfg))

    killed = subprocess.run([sys.executable, str(script), "13", str(tmp_path / "b")],
                            capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr  # killed at step 13 of 29
    assert (tmp_path / "b" / "train_state.pt").is_file()  # holds step 10
    tc = TrainConfig(**cfg)  # type: ignore[arg-type]
    straight, _ = train_sae(tensor_source(x, 64), tc, tmp_path / "a", progress=False)
    steps: list[int] = []
    resumed, _ = train_sae(tensor_source(x, 64), tc, tmp_path / "b", progress=False,
                           on_step=lambda s, _m: steps.append(s))
    assert steps[0] == 11 and steps[-1] == 29  # ceil(3 * 600 / 64)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "b" / "train_state.pt").exists()


def test_resume_refuses_a_different_config(tmp_path):
    x, _ = planted(n=256, d=8, n_atoms=12)
    cfg = TrainConfig(expansion=2, k=2, batch_size=64, epochs=1, keep_state=True, init_rows=64)
    train_sae(tensor_source(x, 64), cfg, tmp_path, progress=False)
    with pytest.raises(MechReasonError, match="different run"):
        train_sae(tensor_source(x, 64), TrainConfig(expansion=2, k=1, batch_size=64,
                                                    init_rows=64), tmp_path, progress=False)


@pytest.mark.parametrize(("kw", "msg"), [({"arch": "gated"}, "unknown trainable SAE"),
                                         ({"k": 0}, "k must be >= 1"),
                                         ({"lr": 0.0}, "need lr > 0")])
def test_train_config_rejects_bad_values(kw, msg):
    with pytest.raises(MechReasonError, match=msg):
        TrainConfig(**kw)


def test_mixed_source_yields_every_row_once_per_epoch():
    from mechreason.sae.train import mixed_source

    a, b = torch.arange(50.0)[:, None].expand(-1, 3), 100 + torch.arange(30.0)[:, None].expand(-1, 3)
    src = mixed_source([tensor_source(a, 8, seed=1), tensor_source(b, 8, seed=2)], seed=3)
    assert src.n_rows == 80 and src.d_in == 3
    for e in range(2):
        got = torch.cat(list(src.epoch(e)))[:, 0]
        assert sorted(got.tolist()) == sorted(torch.cat([a, b])[:, 0].tolist())
        assert torch.equal(got, torch.cat(list(src.epoch(e)))[:, 0])  # same order every time
    with pytest.raises(MechReasonError, match="one width"):
        mixed_source([tensor_source(a, 8), tensor_source(torch.zeros(4, 2), 8)])


def _dense_reference_loss(sae: SparseAutoencoder, x: torch.Tensor, dead: torch.Tensor,
                          k_aux: int, aux_coeff: float) -> torch.Tensor:
    """The TopK + AuxK loss written densely, autograd everywhere (Gao et al. 2024 with
    the same choices as ours: normalised space, ReLU on the top-k and the aux latents,
    aux residual x - x_hat, no bias in the aux reconstruction)."""
    xn = x * sae.norm_scale
    pre = (xn - sae.b_dec) @ sae.W_enc + sae.b_enc  # (batch, d_sae)
    vals, idx = pre.topk(sae.cfg.k, dim=-1)
    acts = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    x_hat = acts @ sae.W_dec + sae.b_dec
    mse = (x_hat - xn).pow(2).sum(-1).mean()
    n_dead = int(dead.sum())
    if n_dead == 0:
        return mse
    k = min(k_aux, n_dead)
    avals, aidx = pre.masked_fill(~dead, float("-inf")).topk(k, dim=-1)
    aux_acts = torch.zeros_like(pre).scatter(-1, aidx, avals.relu())
    aux = (aux_acts @ sae.W_dec - (xn - x_hat).detach()).pow(2).sum(-1).mean()
    return mse + aux_coeff * aux * min(n_dead / k_aux, 1.0)


@pytest.mark.parametrize("n_dead", [0, 5, 40])
def test_sparse_step_equals_dense_reference(n_dead):
    """Our sparse TopK step (embedding_bag decode, sparse encoder backward) gives the
    dense computation's loss and gradients for every parameter, with and without AuxK."""
    from mechreason.sae.train import _Run, step_loss

    d_in, d_sae, k, batch = 11, 56, 5, 37
    g = torch.Generator().manual_seed(7)
    x = torch.randn(batch, d_in, generator=g, dtype=torch.float64) * 3 + 1
    sae = SparseAutoencoder(SAEConfig(d_in=d_in, d_sae=d_sae, k=k), seed=3).double()
    sae.init_from_data(x)
    with torch.no_grad():  # off the symmetric init, so that every gradient is generic
        sae.W_enc.add_(0.1 * torch.randn(d_in, d_sae, generator=g, dtype=torch.float64))
        sae.b_enc.add_(0.1 * torch.randn(d_sae, generator=g, dtype=torch.float64))
    cfg = TrainConfig(k=k, dead_tokens=10, k_aux=8)
    run = _Run(sae, cfg)
    run.tokens = 100
    dead_ids = torch.randperm(d_sae, generator=g)[:n_dead]
    run.last_fired[:] = run.tokens
    run.last_fired[dead_ids] = 0
    assert int(run.dead().sum()) == n_dead
    ours = step_loss(run, x)
    ours.loss.backward()
    got = {n: p.grad.clone() for n, p in sae.named_parameters()}
    sae.zero_grad(set_to_none=True)
    ref = _dense_reference_loss(sae, x, run.dead(), cfg.k_aux, cfg.aux_coeff)
    ref.backward()
    torch.testing.assert_close(ours.loss, ref, rtol=1e-12, atol=0)
    for name, p in sae.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        torch.testing.assert_close(got[name], p.grad, rtol=1e-10, atol=1e-12, msg=name)
