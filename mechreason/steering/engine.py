"""Steering engine: one fused hook per touched hook point, positions tracked across
prefill and KV-cached decode (DESIGN section 5).

:func:`steer` returns a context manager that wraps *any* generation call on the model
(mechreason's engine, HF ``generate``, a user's loop). A forward pre-hook on the HF
model reads, once per forward call, the engine's step (cached length and attention
mask; :func:`mechreason.model.engine.step_info`), derives every current token's absolute
position from it, and evaluates each position rule into a
``(B, T, rules)`` mask. Each touched hook point then gets one hook that applies all of
its interventions in a single vectorised update built from persistent buffers::

    c = mask[..., col] * alpha            # (B, T, rows)
    c[ablate] *= -(x @ U)                 # projections, read in one matmul with...
    c[clamp] = mask * (alpha - a(x))      # ...the clamped latents' encoder columns
    x = x + c @ W                         # one write for every intervention

A hook point with no active position in a call returns at once (zero rows are no-ops);
``set_alpha`` edits the buffer in place, so changing a coefficient never re-registers
a hook. Hooks are registered all or nothing and removed on exit, exceptions included.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError
from mechreason.model.engine import step_info
from mechreason.model.hooks import hooks_context
from mechreason.steering.interventions import Intervention, Rows
from mechreason.steering.positions import Positions, Tracker

if TYPE_CHECKING:
    import torch

    from mechreason.model.loading import Model

log = logging.getLogger(__name__)


class _Fused:
    """Every intervention of one hook point, as buffers in row order add|ablate|clamp."""

    def __init__(self, engine: Steering, hook: str, items: list[tuple[int, Rows, int]],
                 alphas: list[float]) -> None:
        import torch

        self.engine, self.hook = engine, hook
        order = {"add": 0, "ablate": 1, "clamp": 2}
        items = sorted(items, key=lambda it: order[it[1].kind])
        self.owner: list[int] = []
        cols: list[int] = []
        for owner, rows, col in items:
            n = rows.write.shape[0]
            self.owner += [owner] * n
            cols += [col] * n
        self.write = torch.cat([r.write for _, r, _ in items])  # (n, d)
        dev = self.write.device
        self.col = torch.tensor(cols, device=dev)
        self.alpha = torch.tensor([alphas[o] for o in self.owner], device=dev,
                                  dtype=self.write.dtype)
        self.cols_used = sorted(set(cols))
        kinds = [r.kind for _, r, _ in items for _ in range(r.write.shape[0])]
        self.n_add = kinds.count("add")
        self.n_abl = kinds.count("ablate")
        self.n_cl = kinds.count("clamp")
        reads = [r.read for _, r, _ in items if r.read is not None]
        self.read = torch.cat(reads, 1) if reads else None  # (d, n_abl + n_cl)
        clamps = [r for _, r, _ in items if r.kind == "clamp"]
        if clamps:
            self.bias = torch.cat([r.bias for r in clamps])  # type: ignore[misc]
            self.thr = torch.cat([r.threshold for r in clamps])  # type: ignore[misc]

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        call = self.engine._call
        if call is None or not any(call.active[j] for j in self.cols_used):
            return None
        m = call.masks[..., self.col]  # (B, T, n)
        c = m * self.alpha
        if self.read is not None:
            proj = x @ self.read  # (B, T, n_abl + n_cl)
            a0, a1 = self.n_add, self.n_add + self.n_abl
            if self.n_abl:
                c[..., a0:a1] = -c[..., a0:a1] * proj[..., :self.n_abl]
            if self.n_cl:
                pre = proj[..., self.n_abl:] + self.bias
                act = pre.clamp_min(0) * (pre > self.thr)
                c[..., a1:] = m[..., a1:] * (self.alpha[a1:] - act)
        if self.engine.count:
            self.engine._record(self.hook, m, call)
        return x + c @ self.write


class _Call:
    """The per-forward-call state the fused hooks read."""

    def __init__(self, masks: torch.Tensor, active: list[bool], state: Any) -> None:
        self.masks, self.active, self.state = masks, active, state


class Steering:
    """A set of interventions bound to a model; use as a context manager."""

    def __init__(self, model: Model, interventions: Sequence[Intervention], *,
                 prompt_lens: Sequence[int] | None = None, count: bool = False) -> None:
        if not interventions:
            raise MechReasonError("steer() needs at least one intervention")
        self.model = model
        self.interventions = list(interventions)
        self.count = count
        self.prompt_lens = list(prompt_lens) if prompt_lens is not None else None
        self.specs: list[Positions] = []
        for iv in self.interventions:
            if iv.pos not in self.specs:
                self.specs.append(iv.pos)
        self.fused = self._compile()
        self._call: _Call | None = None
        self._tracker: Tracker | None = None
        self.applications: list[tuple[str, int, int]] = []
        """(hook, row, position) of every application (only with ``count=True``)."""

    def _compile(self) -> dict[str, _Fused]:
        """Validate everything and build buffers before any hook is registered."""
        by_hook: dict[str, list[tuple[int, Rows, int]]] = {}
        alphas = [float(iv.alpha) for iv in self.interventions]
        valid = frozenset(self.model.points)
        for i, iv in enumerate(self.interventions):
            hook = iv.check(self.model, valid)
            by_hook.setdefault(hook, []).append((i, iv.rows(self.model), self.specs.index(iv.pos)))
        return {h: _Fused(self, h, items, alphas) for h, items in by_hook.items()}

    def set_alpha(self, which: int | str, value: float) -> None:
        """Change an intervention's coefficient (by index or name) in place."""
        names = [iv.name for iv in self.interventions]
        if isinstance(which, str):
            if which not in names:
                raise MechReasonError(f"no intervention named {which!r}; names: {names}")
            idx = names.index(which)
        else:
            idx = int(which)
            if not 0 <= idx < len(self.interventions):
                raise MechReasonError(f"intervention index {which} out of range "
                                      f"0..{len(self.interventions) - 1}")
        for f in self.fused.values():
            for row, owner in enumerate(f.owner):
                if owner == idx:
                    f.alpha[row] = value

    def _pre_hook(self, _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        ref = ids if ids is not None else embeds
        if ref is None:
            raise MechReasonError("steering needs input_ids or inputs_embeds in the forward call")
        batch, length = int(ref.shape[0]), int(ref.shape[1])
        step = step_info(self.model.hf, kwargs)
        assert self._tracker is not None
        state = self._tracker.update(ids, step.mask, step.past_len, batch, length, ref.device,
                                     step.rows)
        masks = self._tracker.masks(self.specs, state, self.model.dtype)
        active = masks.flatten(0, 1).any(0).tolist()  # (B, T, n): does intervention n touch any token
        self._call = _Call(masks, active, state)

    def _record(self, hook: str, m: torch.Tensor, call: _Call) -> None:
        hit = m.any(-1).nonzero().tolist()
        pos = call.state.real_pos
        rows = self._tracker.rows if self._tracker is not None else []
        self.applications += [(hook, rows[b] if rows else b, int(pos[b, t])) for b, t in hit]

    def applied(self, hook: str) -> dict[int, list[int]]:
        """Row -> sorted positions steered at ``hook`` (needs ``count=True``)."""
        out: dict[int, list[int]] = {}
        for h, b, p in self.applications:
            if h == hook:
                out.setdefault(b, []).append(p)
        return {b: sorted(v) for b, v in out.items()}

    def __enter__(self) -> Steering:
        self._stack = contextlib.ExitStack()
        want = any(p.kind == "sentence-starts" for p in self.specs)
        self._tracker = Tracker(self.model.tokenizer, want_sentences=want,
                                prompt_lens=self.prompt_lens)
        try:  # all or nothing: anything registered is removed if a later step fails
            self._stack.enter_context(hooks_context(self.model, dict(self.fused)))
            handle = self.model.hf.register_forward_pre_hook(self._pre_hook, with_kwargs=True)
            self._stack.callback(handle.remove)
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._call = None
        self._stack.close()


def steer(model: Model, interventions: Sequence[Intervention] | Intervention, *,
          prompt_lens: Sequence[int] | None = None, count: bool = False) -> Steering:
    """Bind ``interventions`` to ``model``; ``with steer(...) as s:`` steers every
    forward call inside the block.

    Args:
        prompt_lens: each row's prompt length, if the first forward call of a
            generation is not exactly the prompt (default: that call's real tokens).
        count: record every (hook, row, position) application (tests; slower).
    """
    ivs = [interventions] if isinstance(interventions, Intervention) else list(interventions)
    return Steering(model, ivs, prompt_lens=prompt_lens, count=count)
