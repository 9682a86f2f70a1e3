"""Steering interventions: add a direction, add to or clamp an SAE latent, project a
direction out (DESIGN section 5).

Each intervention compiles to *rows* of one fused per-layer update (see
:mod:`mechreason.steering.engine`). At every chosen position ``x`` (a residual,
attention-out or MLP-out activation) becomes ``x + sum_rows c_row * w_row`` with

* :class:`Add` (Turner et al. 2023, Rimsky et al. 2024 CAA): ``c = alpha``,
  ``w = vector``.
* :class:`AddLatent`: ``c = alpha``, ``w = W_dec[latent]``, i.e. the latent's value
  raised by ``alpha`` and decoded.
* :class:`Clamp` (Templeton et al. 2024; He et al. 2026): ``c = alpha - a(x)``,
  ``w = W_dec[latent]``, where ``a(x)`` is the latent's current activation. The
  change is a decoder delta, so the SAE's reconstruction error is kept and only the
  clamped latents are encoded (``|latents| x d`` per token, not a full encode/decode).
* :class:`Ablate` (Arditi et al. 2024): ``c = -alpha * (x . u)`` for each orthonormal
  ``u`` of the directions' span; ``alpha = 1`` removes the projection.

SAEs are duck-typed: any object with ``W_enc (d, n)``, ``b_enc (n)``, ``W_dec (n, d)``,
``b_dec (d)`` and optionally ``threshold (n)`` (JumpReLU), ``norm_scale`` (input
scaling, undone on decode) and ``cfg.apply_b_dec_to_input``: a SAELens ``SAE`` or
mechreason's own. For a top-k SAE the latent's value is taken as ReLU of its
pre-activation, ignoring competition from the other latents.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from mechreason.errors import MechReasonError
from mechreason.steering.positions import Positions

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model

STEERABLE = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out",
             "hook_mlp_out")
"""Hook points (``blocks.{L}.<point>``) whose activation is (batch, pos, d_model)."""

RowKind = Literal["add", "ablate", "clamp"]


class Rows(NamedTuple):
    """One intervention compiled for the fused update."""

    kind: RowKind
    write: torch.Tensor
    """(n, d): vectors written into the activation."""
    read: torch.Tensor | None
    """(d, n): ablate: the unit directions; clamp: the latents' encoder columns."""
    bias: torch.Tensor | None
    """(n,): clamp: encoder bias with ``b_dec`` folded in."""
    threshold: torch.Tensor | None
    """(n,): clamp: JumpReLU thresholds (zeros for ReLU SAEs)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Intervention:
    """Common fields: where, when, and how strongly."""

    hook: str | None = None
    """Hook name, e.g. ``blocks.15.hook_resid_post`` (required, except that SAE
    interventions default to the SAE's own hook)."""
    alpha: float = 1.0
    """Coefficient: the scale (Add, AddLatent, Ablate) or the clamp value (Clamp).
    Changed during a run with ``Steering.set_alpha`` without re-registering hooks."""
    positions: Positions | str = "all"
    """Which tokens: a :class:`Positions` or its string form (``"first"``,
    ``"window:0:8"``, ...; see :mod:`mechreason.steering.positions`). Kept as given;
    :attr:`pos` is the parsed form."""
    name: str | None = None
    """A label for ``set_alpha`` and reports."""

    def __post_init__(self) -> None:
        self.pos  # noqa: B018  (parse now: a bad position spec fails at construction)
        if not math.isfinite(self.alpha):
            raise MechReasonError(f"alpha must be finite, got {self.alpha!r}")

    @functools.cached_property
    def pos(self) -> Positions:
        """The positions, parsed."""
        return Positions.parse(self.positions)

    def resolved_hook(self) -> str | None:
        return self.hook

    def rows(self, model: Model) -> Rows:
        raise NotImplementedError

    def check(self, model: Model, valid: frozenset[str] | None = None) -> str:
        """Validate against ``model`` (``valid``: its hook names, if already known);
        return the hook name."""
        hook = self.resolved_hook()
        if not hook:
            raise MechReasonError(f"{type(self).__name__} needs a hook name, e.g. "
                                  "'blocks.15.hook_resid_post'")
        if valid is None or hook not in valid:
            model.check_hook(hook)
        point = hook.rsplit(".", 1)[-1]
        if not re.fullmatch(r"blocks\.\d+\.hook_\w+", hook) or point not in STEERABLE:
            raise MechReasonError(
                f"cannot steer hook {hook!r}: steerable points are blocks.L.<point> with "
                f"<point> one of {', '.join(STEERABLE)}")
        return hook


def _check_vector(v: torch.Tensor, d_model: int, what: str) -> None:
    import torch

    if not isinstance(v, torch.Tensor):
        raise MechReasonError(f"{what} must be a torch.Tensor, got {type(v).__name__}")
    if v.shape[-1] != d_model or v.dim() not in (1, 2):
        raise MechReasonError(f"{what} has shape {tuple(v.shape)}; the model's d_model is "
                              f"{d_model}, so use ({d_model},)")
    if not torch.isfinite(v).all():
        raise MechReasonError(f"{what} contains NaN or inf")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Add(Intervention):
    """Add ``alpha * vector``."""

    vector: Any = None
    """(d_model,) tensor."""

    def rows(self, model: Model) -> Rows:
        _check_vector(self.vector, model.d_model, "steering vector")
        if self.vector.dim() != 1:
            raise MechReasonError(f"steering vector must be 1-D, got {tuple(self.vector.shape)}")
        w = self.vector.detach().to(model.device, model.dtype).view(1, -1)
        return Rows("add", w, None, None, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ablate(Intervention):
    """Remove ``alpha`` times the projection onto the span of ``directions``."""

    directions: Any = None
    """(d_model,) or (k, d_model) tensor; orthonormalised here."""

    def rows(self, model: Model) -> Rows:
        import torch
        from einops import rearrange

        _check_vector(self.directions, model.d_model, "ablation direction(s)")
        d = self.directions.detach().to(model.device, torch.float64)
        d = d if d.dim() == 2 else rearrange(d, "d -> 1 d")  # (k, d_model)
        q, r = torch.linalg.qr(d.T)  # (d, k) orthonormal basis of the span
        if (r.diagonal().abs() < 1e-8 * r.abs().max()).any():
            raise MechReasonError("ablation directions are zero or linearly dependent")
        u = q.T.to(model.dtype)  # (k, d)
        return Rows("ablate", u, u.T.contiguous(), None, None)


def _norm_scale(sae: Any) -> float:
    """mechreason SAEs read ``x * norm_scale`` and decode ``/ norm_scale``."""
    s = getattr(sae, "norm_scale", None)
    return 1.0 if s is None else float(s)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Latent(Intervention):
    sae: Any = None
    """An SAE (SAELens ``SAE`` or any object with W_enc, b_enc, W_dec, b_dec)."""
    latent: int = 0
    """The latent's index."""

    def resolved_hook(self) -> str | None:
        from mechreason.sae.io import sae_hook

        return self.hook or sae_hook(self.sae)

    def check(self, model: Model, valid: frozenset[str] | None = None) -> str:
        hook = super().check(model, valid)
        sae = self.sae
        for attr in ("W_enc", "b_enc", "W_dec", "b_dec"):
            if getattr(sae, attr, None) is None:
                raise MechReasonError(f"the SAE has no {attr}: pass an object with W_enc, "
                                      "b_enc, W_dec, b_dec (e.g. sae_lens.SAE)")
        from mechreason.sae.io import check_sae_fits

        check_sae_fits(sae, model, hook)
        n = int(sae.W_dec.shape[0])
        if not 0 <= self.latent < n:
            raise MechReasonError(f"latent {self.latent} out of range: the SAE has latents "
                                  f"0..{n - 1}")
        norm = getattr(getattr(sae, "cfg", None), "normalize_activations", "none")
        if norm not in (None, "none"):
            raise MechReasonError(f"SAE input normalisation {norm!r} is not supported for "
                                  "steering; fold it into the weights first")
        return hook

    def _decoder_row(self, model: Model) -> torch.Tensor:
        row = self.sae.W_dec[self.latent].detach().to(model.device, model.dtype)
        return (row / _norm_scale(self.sae)).view(1, -1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class AddLatent(_Latent):
    """Raise one SAE latent's value by ``alpha`` (adds ``alpha * W_dec[latent]``)."""

    def rows(self, model: Model) -> Rows:
        return Rows("add", self._decoder_row(model), None, None, None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Clamp(_Latent):
    """Set one SAE latent's value to ``alpha`` as a decoder delta."""

    def rows(self, model: Model) -> Rows:
        import torch

        sae, j = self.sae, self.latent
        w_enc = sae.W_enc[:, j].detach().to(model.device, model.dtype)
        bias = sae.b_enc[j].detach().to(model.device, model.dtype)
        cfg = getattr(sae, "cfg", None)
        if getattr(cfg, "apply_b_dec_to_input", True):
            # (x s - b_dec) @ w + b = x @ (s w) + (b - b_dec @ w): fold b_dec into the bias
            bias = bias - sae.b_dec.detach().to(model.device, model.dtype) @ w_enc
        w_enc = w_enc * _norm_scale(sae)
        thr = getattr(sae, "threshold", None)
        thr = (torch.zeros((), device=model.device, dtype=model.dtype) if thr is None
               else thr[j].detach().to(model.device, model.dtype))
        return Rows("clamp", self._decoder_row(model), w_enc.view(-1, 1), bias.view(1),
                    thr.view(1))


def latent_activation(sae: Any, x: torch.Tensor, latent: int) -> torch.Tensor:
    """One latent's activation (ReLU, or JumpReLU when the SAE has thresholds)."""
    cfg = getattr(sae, "cfg", None)
    x = x * _norm_scale(sae)
    inp = x - sae.b_dec if getattr(cfg, "apply_b_dec_to_input", True) else x
    pre = inp @ sae.W_enc[:, latent] + sae.b_enc[latent]
    thr = getattr(sae, "threshold", None)
    t = 0.0 if thr is None else thr[latent]
    return pre.clamp_min(0) * (pre > t)
