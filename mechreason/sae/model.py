"""SAE stage, the model: TopK (Gao et al. 2024, with the AuxK loss against dead latents),
ReLU with an L1 penalty (Bricken et al. 2023), and JumpReLU (Rajamanoharan et al. 2024)
for inference on loaded SAEs.

Conventions match SAELens 6 so files round-trip: ``W_enc`` is (d_in, d_sae), ``W_dec``
(d_sae, d_in), the decoder bias is subtracted from the input before encoding, and
``encode`` returns dense latents. Activation normalisation is one scalar ``norm_scale``
(inputs are multiplied by it so that E||x||² = d_in, as in Anthropic's April 2024
update); it is folded into the weights when saving (:meth:`fold_norm_scale`).

Training uses a sparse path for TopK: the encoder matmul is dense (it must rank every
latent), but decoding gathers only the k active decoder rows (``embedding_bag``) and
the encoder's backward touches only the k selected columns (two sparse matmuls, for
W_enc and for the input, whose gradient reaches b_dec), instead of the five dense
(batch, d_in, d_sae) products of a dense implementation. Loss and gradients equal the
dense computation's (``tests/test_sae.py::test_sparse_step_equals_dense_reference``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mechreason.errors import MechReasonError, unknown

ARCHS = ("topk", "relu", "jumprelu")
Arch = Literal["topk", "relu", "jumprelu"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SAEConfig:
    """Shape and identity of one SAE."""

    d_in: int
    """Width of the activations it reads (the model's d_model for the residual stream)."""
    d_sae: int
    """Number of latents."""
    arch: Arch = "topk"
    """``topk``, ``relu`` (L1-trained) or ``jumprelu`` (inference only)."""
    k: int | None = None
    """Active latents per token (topk only)."""
    hook: str | None = None
    """The TransformerLens hook name it was trained on, e.g. ``blocks.15.hook_resid_post``."""
    model: str | None = None
    """The model it was trained on (a mechreason model name or hub id)."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise unknown("SAE architecture", self.arch, ARCHS)
        if self.d_in < 1 or self.d_sae < 1:
            raise MechReasonError(f"d_in and d_sae must be >= 1, got {self.d_in}, {self.d_sae}")
        if self.arch == "topk" and (self.k is None or not 1 <= self.k <= self.d_sae):
            raise MechReasonError(f"topk SAE needs 1 <= k <= d_sae={self.d_sae}, got k={self.k}")


class SAEOutput(NamedTuple):
    """What :meth:`SparseAutoencoder.forward` returns."""

    x_hat: Tensor
    """Reconstruction, in the input's own scale."""
    values: Tensor
    """Active latent values: (batch, k) for topk, the dense (batch, d_sae) otherwise."""
    indices: Tensor | None
    """Latent ids of ``values`` (topk), or None when ``values`` is dense."""
    pre: Tensor
    """Encoder pre-activations in normalised space (detached; for AuxK and dead tracking)."""


class _GatherPre(torch.autograd.Function):
    """``pre[b, idx[b, j]]`` for ``pre = x @ W_enc + b_enc``, whose backward touches only the
    gathered columns: with G the (batch, d_sae) gradient, k entries per row,
    grad W_enc = x^T G (a sparse matmul) and grad x = G W_enc^T (a weighted sum of k
    encoder columns per row)."""

    @staticmethod
    def forward(ctx: Any, gathered: Tensor, x: Tensor, W_enc: Tensor, b_enc: Tensor,
                idx: Tensor) -> Tensor:
        ctx.save_for_backward(x, W_enc, idx)
        return gathered.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor
                 ) -> tuple[None, Tensor | None, Tensor, Tensor, None]:
        x, W_enc, idx = ctx.saved_tensors
        b, m = idx.shape
        d_sae = W_enc.shape[1]
        rows = torch.arange(b, device=idx.device).repeat_interleave(m)
        flat_idx, flat_grad = idx.reshape(-1), grad.reshape(-1)
        g_t = torch.sparse_coo_tensor(torch.stack([flat_idx, rows]), flat_grad, (d_sae, b),
                                      check_invariants=False)
        grad_w = torch.sparse.mm(g_t, x.detach()).t()  # (d_in, d_sae)
        grad_b = torch.zeros(d_sae, dtype=grad.dtype, device=grad.device)
        grad_b.index_add_(0, flat_idx, flat_grad)
        grad_x = None
        if ctx.needs_input_grad[1]:  # to b_dec, through the encoder input x - b_dec
            # G W_enc^T as a weighted sum of k encoder columns per row (a COO sparse.mm
            # here measured 20x slower on CPU)
            grad_x = F.embedding_bag(idx, W_enc.detach().t().contiguous(),
                                     per_sample_weights=grad, mode="sum")  # (batch, d_in)
        return None, grad_x, grad_w, grad_b, None


class SparseAutoencoder(nn.Module):
    """A sparse autoencoder over one hook's activations (see the module docstring)."""

    norm_scale: Tensor
    threshold: nn.Parameter

    def __init__(self, cfg: SAEConfig, *, seed: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(w_dec)
        # Encoder starts as the decoder's transpose (Gao et al. 2024, sec. A.1).
        self.W_enc = nn.Parameter(w_dec.t().clone().contiguous())
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.arch == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))
        self.register_buffer("norm_scale", torch.ones(()))

    # -- inference (SAELens-identical) -------------------------------------------------
    def encode_pre(self, x: Tensor) -> Tensor:
        """Pre-activations, in the same operation order as SAELens."""
        x = x.to(self.W_enc.dtype) * self.norm_scale
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: Tensor) -> Tensor:
        """Dense latents from pre-activations."""
        if self.cfg.arch == "topk":
            assert self.cfg.k is not None
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
            return torch.zeros_like(pre).scatter_(-1, idx, vals.relu())
        if self.cfg.arch == "jumprelu":
            return pre.relu() * (pre > self.threshold).to(pre.dtype)
        return pre.relu()

    def encode(self, x: Tensor) -> Tensor:
        """Dense latent activations (what ``sae_lens.SAE.encode`` returns)."""
        return self.activate(self.encode_pre(x))

    def decode(self, acts: Tensor) -> Tensor:
        """Reconstruction from dense latents, in the input's scale."""
        return (acts @ self.W_dec + self.b_dec) / self.norm_scale

    def decode_sparse(self, values: Tensor, indices: Tensor
                      ) -> Tensor:
        """Reconstruction (normalised space, no bias) from k active latents per row."""
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    # -- training ----------------------------------------------------------------------
    def forward(self, x: Tensor) -> SAEOutput:
        """Encode and decode one batch; the TopK path is sparse (see module docstring)."""
        x = x.to(self.W_enc.dtype)
        if self.cfg.arch != "topk":
            pre = self.encode_pre(x)
            acts = self.activate(pre)
            return SAEOutput(self.decode(acts), acts, None, pre.detach())
        xin = x * self.norm_scale - self.b_dec
        with torch.no_grad():
            pre = torch.addmm(self.b_enc, xin, self.W_enc)
            vals, idx = pre.topk(self.cfg.k or 0, dim=-1, sorted=False)
        vals = self.gather_pre(pre, xin, idx, vals)
        vals = vals.relu()
        x_hat = (self.decode_sparse(vals, idx) + self.b_dec) / self.norm_scale
        return SAEOutput(x_hat, vals, idx, pre)

    def gather_pre(self, pre: Tensor, xin: Tensor, idx: Tensor, gathered: Tensor | None = None
                   ) -> Tensor:
        """``pre.gather(-1, idx)`` with gradients to the encoder through the sparse path.
        ``xin`` is the encoder input (normalised, minus b_dec); its gradient is propagated,
        so b_dec learns through both the encoder input and the decoder output, as in
        SAELens and sparsify (and as autograd gives for the dense computation)."""
        if gathered is None:
            gathered = pre.gather(-1, idx)
        out: Tensor = _GatherPre.apply(gathered, xin, self.W_enc, self.b_enc, idx)
        return out

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Rescale decoder rows to unit norm."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Drop the decoder gradient's component along each row, so Adam's step keeps rows
        near unit norm (renormalised after each step anyway)."""
        g = self.W_dec.grad
        if g is None:
            return
        g -= (g * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec

    @torch.no_grad()
    def init_from_data(self, sample: Tensor, *, median_iters: int = 20) -> None:
        """Set ``norm_scale`` so E||x||² = d_in, and ``b_dec`` to the geometric median of the
        normalised sample (Weiszfeld iterations; the mean if ``median_iters`` is 0)."""
        sample = sample.to(self.W_enc.dtype)
        sq = sample.pow(2).sum(dim=1).mean()
        self.norm_scale.fill_((self.cfg.d_in / sq.clamp_min(1e-12)).sqrt())
        xs = sample * self.norm_scale
        self.b_dec.copy_(geometric_median(xs, iters=median_iters))

    @torch.no_grad()
    def fold_norm_scale(self) -> float:
        """Fold ``norm_scale`` into the weights (outputs unchanged); returns the old scale."""
        s = float(self.norm_scale)
        self.W_enc.mul_(s)
        self.W_dec.div_(s)
        self.b_dec.div_(s)
        if self.cfg.arch == "jumprelu":
            pass  # thresholds live in pre-activation space, which folding leaves unchanged
        self.norm_scale.fill_(1.0)
        return s


@torch.no_grad()
def geometric_median(x: Tensor, *, iters: int = 20, eps: float = 1e-6
                     ) -> Tensor:
    """Weiszfeld's algorithm started from the mean (``iters=0`` gives the mean)."""
    m = x.mean(dim=0)
    for _ in range(iters):
        w = 1.0 / (x - m).norm(dim=1).clamp_min(eps)
        m = (w[:, None] * x).sum(dim=0) / w.sum()
    return m


def auxk_loss(sae: SparseAutoencoder, pre: Tensor, xin: Tensor, residual: Tensor,
              dead: Tensor, k_aux: int) -> Tensor:
    """AuxK (Gao et al. 2024, A.2): the top ``k_aux`` dead latents (ReLU'd, as in
    sparsify and OpenAI's code; SAELens 6 keeps negative values) reconstruct the main
    reconstruction's residual ``residual = x - x_hat`` (normalised space) with the decoder
    and no bias. Scaled by min(n_dead / k_aux, 1)."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    k = min(k_aux, n_dead)
    masked = pre.masked_fill(~dead, float("-inf"))
    vals, idx = masked.topk(k, dim=-1, sorted=False)
    vals = sae.gather_pre(pre, xin, idx, vals).relu()
    recon = sae.decode_sparse(vals, idx)
    loss = (recon - residual.detach()).pow(2).sum(dim=-1).mean()
    return loss * min(n_dead / k_aux, 1.0)
