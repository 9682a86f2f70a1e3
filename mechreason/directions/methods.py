"""Directions, stage 2: methods that turn two groups of activations into one direction.

Each method is a small typed callable ``(a, b) -> Float[Tensor, "d"]`` over one layer's
vectors, pointing from group B towards group A:

- :func:`mean_diff`: A-minus-B difference of means, unnormalised, as ThinkEdit
  (Sun et al. 2025) builds its long-minus-short reasoning direction; :func:`unit_mean_diff`
  is the same normalised to length 1.
- :func:`label_vs_all`: the label's mean minus the overall mean, rescaled to the overall
  mean's norm (Venhoff et al. 2025a, "Understanding Reasoning in Thinking Language Models
  via Steering Vectors"); the overall mean is taken over A and B together.
- :func:`pca_paired`: the first principal component of per-problem paired differences
  (Hojer et al. 2025, "Improving Reasoning Performance in Large Language Models via
  Representation Engineering", after repeng's control vectors), sign-aligned with the mean
  difference.
- :func:`logistic`: an L2-regularised logistic-regression probe in plain torch, as the
  supervised comparison (Alain and Bengio 2016, linear probes).

``pca_paired`` and ``logistic`` return the unit direction scaled by the mean difference's
component along it, so every method's output is in activation units and comparable.
"""


from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from mechreason.errors import MechReasonError, unknown


class Group(NamedTuple):
    """One group's vectors at one layer, each row tagged with its problem id."""

    x: Float[Tensor, "n d"]
    ids: Sequence[str]
    """Problem id of each row (rows of one problem may repeat, e.g. one per sentence)."""


Method = Callable[[Group, Group], Float[Tensor, " d"]]


def check_groups(a: Group, b: Group) -> None:
    """Raise a :class:`MechReasonError` for empty groups, mismatched widths or NaN/inf."""
    for name, g in (("A", a), ("B", b)):
        if g.x.ndim != 2:
            raise MechReasonError(f"group {name} must be a (rows, d_model) matrix, got shape "
                                  f"{tuple(g.x.shape)}")
        if g.x.shape[0] == 0:
            raise MechReasonError(f"group {name} is empty: no vectors matched its selection")
        if len(g.ids) != g.x.shape[0]:
            raise MechReasonError(f"group {name} has {g.x.shape[0]} vectors but {len(g.ids)} "
                                  "problem ids")
        if not bool(torch.isfinite(g.x).all()):
            bad = int((~torch.isfinite(g.x)).any(dim=1).sum())
            raise MechReasonError(f"group {name} has {bad} vector(s) with NaN or inf values")
    if a.x.shape[1] != b.x.shape[1]:
        raise MechReasonError(f"groups have different widths: A is d={a.x.shape[1]}, "
                              f"B is d={b.x.shape[1]}")


def mean_diff(a: Group, b: Group) -> Float[Tensor, " d"]:
    """mean(A) - mean(B), unnormalised (ThinkEdit)."""
    check_groups(a, b)
    return a.x.double().mean(0).sub(b.x.double().mean(0)).float()


def unit_mean_diff(a: Group, b: Group) -> Float[Tensor, " d"]:
    """mean(A) - mean(B) at unit length."""
    v = mean_diff(a, b)
    return v / _nonzero_norm(v, "mean difference")


def label_vs_all(a: Group, b: Group) -> Float[Tensor, " d"]:
    """mean(A) - mean(A and B), rescaled to the norm of mean(A and B) (Venhoff 2025a)."""
    check_groups(a, b)
    overall = torch.cat([a.x, b.x]).double().mean(0)
    v = a.x.double().mean(0) - overall
    return (v * overall.norm() / _nonzero_norm(v, "label-minus-overall difference")).float()


def pca_paired(a: Group, b: Group) -> Float[Tensor, " d"]:
    """First principal direction of paired differences (Hojer et al. 2025).

    Pairs are problems present in both groups; each problem's difference is
    mean(A rows of p) - mean(B rows of p). The component is uncentred (the first right
    singular vector of the difference matrix): centring would subtract the shared shift,
    which is the signal. Sign: the mean difference projects positively.
    """
    check_groups(a, b)
    ma, mb = _mean_by_id(a), _mean_by_id(b)
    common = sorted(set(ma) & set(mb))
    if len(common) < 2:
        raise MechReasonError(f"pca needs paired problems (the same id in both groups); found "
                              f"{len(common)} shared id(s) between {len(ma)} A and {len(mb)} "
                              "B problems")
    diffs = torch.stack([ma[p] - mb[p] for p in common])  # (pairs, d)
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    u = vh[0]
    along = float(diffs.mean(0) @ u)
    if along < 0:
        u, along = -u, -along
    return (u * along).float()


def logistic(a: Group, b: Group, *, l2: float = 1e-2, steps: int = 200) -> Float[Tensor, " d"]:
    """Weights of an L2-regularised, class-balanced logistic probe for A vs B.

    Features are centred on the mean of the two class means and divided by one scalar
    (their RMS), so the direction stays in the activations' own geometry.
    """
    check_groups(a, b)
    x = torch.cat([a.x, b.x]).double()
    y = torch.cat([torch.ones(len(a.x)), torch.zeros(len(b.x))]).double()
    w_row = torch.cat([torch.full((len(a.x),), 0.5 / len(a.x)),
                       torch.full((len(b.x),), 0.5 / len(b.x))]).double()
    centre = (a.x.double().mean(0) + b.x.double().mean(0)) / 2
    scale = (x - centre).pow(2).mean().sqrt().clamp_min(1e-12)
    z = (x - centre) / scale
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(
            z @ w + bias, y, weight=w_row, reduction="sum") + l2 * w.pow(2).sum())
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    u = w.detach() / _nonzero_norm(w.detach(), "logistic probe weight")
    along = float((a.x.double().mean(0) - b.x.double().mean(0)) @ u)
    return (u * along).float()


def _mean_by_id(g: Group) -> dict[str, Tensor]:
    out: dict[str, list[Tensor]] = {}
    for i, pid in enumerate(g.ids):
        out.setdefault(str(pid), []).append(g.x[i])
    return {k: torch.stack(v).double().mean(0) for k, v in out.items()}


def _nonzero_norm(v: Tensor, what: str) -> Tensor:
    n = v.norm()
    if not float(n) > 0:
        raise MechReasonError(f"the {what} is zero: the two groups do not differ")
    return n


METHODS: dict[str, Method] = {
    "mean-diff": mean_diff,
    "unit-mean-diff": unit_mean_diff,
    "label-vs-all": label_vs_all,
    "pca": pca_paired,
    "logistic": logistic,
}

CITATIONS: dict[str, str] = {
    "mean-diff": "ThinkEdit (Sun et al. 2025): difference of group means, unnormalised",
    "unit-mean-diff": "difference of group means, unit length",
    "label-vs-all": "Venhoff et al. 2025a: label mean minus overall mean, overall-mean norm",
    "pca": "Hojer et al. 2025: first PC of paired differences, sign-aligned",
    "logistic": "L2-regularised logistic probe (comparison)",
}


def get_method(name: str) -> Method:
    """The method called ``name`` (see :data:`METHODS`)."""
    if name not in METHODS:
        raise unknown("direction method", name, METHODS)
    return METHODS[name]
