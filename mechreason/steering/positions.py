"""Steering positions: which tokens an intervention touches, tracked per row across
prefill and every KV-cached decode step (DESIGN section 5).

Peers get positions wrong once a KV cache is on, because each decode step is one token
long (steering-vectors #60, CAA's first-token miss, neuronpedia #163). Here every
position is *absolute*: the index of a token within its own row, left padding
excluded, derived for each forward call from the attention mask (the current tokens
are the mask's last ``T`` columns) or, without a mask, from the cache length. A
position is therefore the same number whether the model runs with a cache, without
one, batched with padding or alone.

Naming convention (why ``first`` is the last prompt token): steering a position
changes what that position *emits*. The position that emits the first generated
token is the last prompt token, so ``first`` means that position, and ``generated``
starts there too; steering "after the prompt" would miss the first generated token.
With ``P`` the prompt length of a row and ``r`` a position:

=================  ============================================================
``all``            every token
``prompt``         ``r < P``
``generated``      ``r >= P - 1`` (every position that emits a generated token)
``first``          ``r == P - 1``; ``first:k``: ``P - 1 <= r < P - 1 + k``
``window:N``       ``r >= P - N``: the last ``N`` tokens at each step (under a KV
                   cache only the newest token is recomputed at decode, so this is
                   the prompt's last ``N`` plus every generated position)
``sentence-starts`` the first token of each generated sentence, detected online with
                   :func:`mechreason.traces.sentences.is_boundary` (the splitter the traces
                   and attribution stages use)
``indices:i,j``    explicit positions; ``i >= 0`` counts from the row's first real
                   token, ``i < 0`` from the prompt end (``-1`` is ``P - 1``)
=================  ============================================================
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError, unknown
from mechreason.traces.sentences import is_boundary

if TYPE_CHECKING:
    import torch

KINDS = ("all", "prompt", "generated", "first", "window", "sentence-starts", "indices")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Positions:
    """A position rule (see the module docstring for each kind)."""

    kind: str = "all"
    """One of ``all, prompt, generated, first, window, sentence-starts, indices``."""
    k: int = 1
    """``first``: how many generated tokens; ``window``: the window length."""
    indices: tuple[int, ...] = ()
    """``indices``: the explicit positions."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise unknown("position kind", self.kind, KINDS)
        if self.kind in ("first", "window") and self.k < 1:
            raise MechReasonError(f"{self.kind}:{self.k}: the count must be >= 1")
        if self.kind == "indices" and not self.indices:
            raise MechReasonError("indices positions need at least one index, e.g. indices:3,7")

    @classmethod
    def parse(cls, spec: str | Positions) -> Positions:
        """``all``, ``prompt``, ``generated``, ``first``, ``first:3``, ``window:8``,
        ``sentence-starts`` or ``indices:0,5,-1``."""
        if isinstance(spec, Positions):
            return spec
        name, _, arg = spec.strip().partition(":")
        name = {"sentence_starts": "sentence-starts", "sentences": "sentence-starts"}.get(
            name, name)
        if name not in KINDS:
            raise unknown("positions", spec, ["all", "prompt", "generated", "first", "first:K",
                                              "window:N", "sentence-starts", "indices:I,J"])
        if name == "window" and not arg:
            raise MechReasonError(f"bad positions {spec!r}: use window:N")
        try:
            if name == "indices":
                return cls(kind=name, indices=tuple(int(x) for x in arg.split(",") if x.strip()))
            if name in ("first", "window"):
                return cls(kind=name, k=int(arg) if arg else 1)
        except ValueError:
            raise MechReasonError(f"bad positions {spec!r}: the argument must be integers") from None
        if arg:
            raise MechReasonError(f"positions {name!r} take no argument, got {spec!r}")
        return cls(kind=name)

    def __str__(self) -> str:
        if self.kind == "indices":
            return "indices:" + ",".join(map(str, self.indices))
        if self.kind == "window" or (self.kind == "first" and self.k > 1):
            return f"{self.kind}:{self.k}"
        return self.kind


@dataclasses.dataclass
class CallState:
    """What one forward call needs to know: each current token's absolute position."""

    real_pos: torch.Tensor
    """(B, T) long: index of each current token within its row, padding excluded."""
    valid: torch.Tensor
    """(B, T) bool: False at left padding."""
    prompt_lens: torch.Tensor
    """(B, 1) long: each row's prompt length."""


class Tracker:
    """Per-generation position state, updated once per forward call of the HF model.

    A call with an empty cache starts a new generation (its real tokens are the
    prompt) unless it extends the previous call's tokens (generation without a
    cache, which re-feeds the whole sequence each step).
    """

    def __init__(self, tokenizer: Any, *, want_sentences: bool,
                 prompt_lens: list[int] | None = None) -> None:
        self.tokenizer = tokenizer
        self.want_sentences = want_sentences
        self.fixed_prompt_lens = prompt_lens
        self.history: torch.Tensor | None = None  # (B, S) every token fed so far
        self.prompt_lens: torch.Tensor | None = None
        self.texts: list[str] = []  # generated text per row (sentence detection)
        self.starts: list[list[bool]] = []  # per row, per generated position
        self.rows: list[int] = []  # each current row's index in the generation's first batch
        self._tok_str: dict[int, str] = {}

    def update(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
               past_len: int, batch: int, length: int, device: torch.device,
               rows: list[int] | None = None) -> CallState:
        """``rows``: the engine's live rows (indices into the generation's first batch),
        when finished rows have left the batch; the per-row state follows them."""
        import torch

        # a first call that continues a cache made outside the context starts one too
        new = self.prompt_lens is None or (
            past_len == 0 and not self._extends(input_ids, batch, length))
        if attention_mask is not None:
            mask = attention_mask[:, -length:].bool()
            real_pos = (attention_mask.long().cumsum(1) - 1)[:, -length:].clamp_min(0)
        else:
            mask = torch.ones(batch, length, dtype=torch.bool, device=device)
            real_pos = (past_len + torch.arange(length, device=device)).expand(batch, length)
        if new:
            self._start(mask, batch, device)
        elif rows is not None and rows != self.rows:
            self._keep(rows)
        if input_ids is not None:
            hist = self.history
            self.history = input_ids if hist is None or past_len == 0 else torch.cat(
                [hist, input_ids], 1)
        assert self.prompt_lens is not None
        state = CallState(real_pos=real_pos, valid=mask, prompt_lens=self.prompt_lens)
        if self.want_sentences and input_ids is not None:
            self._classify(input_ids, state)
        return state

    def _extends(self, input_ids: torch.Tensor | None, batch: int, length: int) -> bool:
        hist = self.history
        if hist is None or input_ids is None or self.prompt_lens is None:
            return False
        if hist.shape[0] != batch or length <= hist.shape[1]:
            return False
        return bool((input_ids[:, :hist.shape[1]] == hist).all())

    def _start(self, mask: torch.Tensor, batch: int, device: torch.device) -> None:
        import torch

        if self.fixed_prompt_lens is not None:
            if len(self.fixed_prompt_lens) != batch:
                raise MechReasonError(
                    f"prompt_lens has {len(self.fixed_prompt_lens)} rows but the model was "
                    f"called with a batch of {batch}")
            lens = torch.tensor(self.fixed_prompt_lens, device=device)
        else:
            lens = mask.long().sum(1)
        self.prompt_lens = lens.view(batch, 1)
        self.history = None
        self.texts = [""] * batch
        self.starts = [[] for _ in range(batch)]
        self.rows = list(range(batch))

    def _keep(self, rows: list[int]) -> None:
        """Drop the state of rows that left the batch (the engine removes finished rows)."""
        import torch

        where = {r: i for i, r in enumerate(self.rows)}
        if any(r not in where for r in rows):
            raise MechReasonError(f"steering lost track of rows {rows} (had {self.rows})")
        idx = [where[r] for r in rows]
        assert self.prompt_lens is not None
        sel = torch.tensor(idx, device=self.prompt_lens.device)
        self.prompt_lens = self.prompt_lens[sel]
        if self.history is not None:
            self.history = self.history[sel]
        self.texts = [self.texts[i] for i in idx]
        self.starts = [self.starts[i] for i in idx]
        self.rows = list(rows)

    def _classify(self, input_ids: torch.Tensor, st: CallState) -> None:
        """Extend each row's generated text with tokens not seen before, marking the
        tokens that start a sentence."""
        pos = st.real_pos.tolist()
        valid = st.valid.tolist()
        ids = input_ids.tolist()
        plen = st.prompt_lens.view(-1).tolist()
        for b, row in enumerate(ids):
            done = plen[b] + len(self.starts[b])  # next unclassified position
            for t, tok in enumerate(row):
                if valid[b][t] and pos[b][t] == done:
                    self.starts[b].append(self._consume(b, tok))
                    done += 1

    def _consume(self, b: int, tok: int) -> bool:
        s = self._tok_str.get(tok)
        if s is None:
            s = self._tok_str[tok] = self.tokenizer.decode([tok])
        text = self.texts[b]
        start = False
        for i, ch in enumerate(s):
            if not ch.isspace() and _starts_sentence(text + s[:i]):
                start = True
                break
        self.texts[b] = text + s
        return start

    def masks(self, specs: list[Positions], st: CallState, dtype: torch.dtype) -> torch.Tensor:
        """(B, T, len(specs)) 0/1 masks of each rule at the current tokens."""
        import torch

        return torch.stack([self._mask(p, st) for p in specs], -1).to(dtype)

    def _mask(self, p: Positions, st: CallState) -> torch.Tensor:
        import torch

        r, plen = st.real_pos, st.prompt_lens
        if p.kind == "all":
            m = torch.ones_like(st.valid)
        elif p.kind == "prompt":
            m = r < plen
        elif p.kind == "generated":
            m = r >= plen - 1
        elif p.kind == "first":
            m = (r >= plen - 1) & (r < plen - 1 + p.k)
        elif p.kind == "window":
            m = r >= plen - p.k
        elif p.kind == "indices":
            m = torch.zeros_like(st.valid)
            for i in p.indices:
                m |= r == (i if i >= 0 else plen + i)
        else:
            m = self._sentence_mask(st)
        return m & st.valid

    def _sentence_mask(self, st: CallState) -> torch.Tensor:
        import torch

        if st.real_pos.shape[1] == 1:  # a decode step: look the flags up directly
            offs = (st.real_pos - st.prompt_lens).view(-1).tolist()
            flags = [0 <= g < len(s) and s[g] for g, s in zip(offs, self.starts)]
            return torch.tensor(flags, dtype=torch.bool, device=st.real_pos.device).view(-1, 1)
        width = max((len(s) for s in self.starts), default=0)
        table = torch.zeros(len(self.starts), width + 1, dtype=torch.bool)
        for b, s in enumerate(self.starts):
            table[b, :len(s)] = torch.tensor(s, dtype=torch.bool)
        table = table.to(st.real_pos.device)
        gen = st.real_pos - st.prompt_lens
        ok = (gen >= 0) & (gen < width)
        return ok & table.gather(1, gen.clamp(0, width))


def _starts_sentence(before: str) -> bool:
    """Whether a non-space character preceded by ``before`` (the generated text so
    far) starts a sentence: the first one, or one after a splitter boundary. Only the
    trailing whitespace run and the character before it matter, so only that tail is
    tested (keeps the online check O(1) per token)."""
    stripped = before.rstrip()
    if not stripped:
        return True
    return is_boundary(before[len(stripped) - 1:])
