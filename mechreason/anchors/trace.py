"""Thought anchors, input: one reasoning trace as token ids with sentence spans
(Bogdan et al. 2025 analyse a chain of thought chunk by chunk).

:class:`AnchorTrace` is what every anchors method reads. It is built from a trace
record of ``mechreason.traces.run`` (``prompt_ids``, ``generated_ids``, ``sentences`` with
absolute ``tok_start``/``tok_end``) by :meth:`AnchorTrace.from_record`, or from
generated ids by :func:`trace_from_ids`, which splits the text with the project's
splitter and maps character spans to token spans by incremental decoding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError
from mechreason.traces.sentences import split_sentences

if TYPE_CHECKING:
    from mechreason.model.loading import Model


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnchorTrace:
    """A trace: prompt + generated token ids and its sentences' token spans."""

    id: str
    ids: tuple[int, ...]
    """Prompt ids followed by generated ids."""
    prompt_len: int
    """How many of ``ids`` are the prompt."""
    spans: tuple[tuple[int, int], ...]
    """Per sentence, ``[tok_start, tok_end)`` as absolute positions in ``ids``."""
    texts: tuple[str, ...]
    """Per sentence, its text."""
    char_starts: tuple[int, ...]
    """Per sentence, its first character in ``generated_text``."""
    generated_text: str
    labels: tuple[tuple[str, ...], ...] = ()
    """Per sentence, its function tags (may be empty)."""
    gold: str | None = None
    answer: str | None = None
    correct: bool | None = None

    def __post_init__(self) -> None:
        n = len(self.spans)
        if n == 0:
            raise MechReasonError(f"trace {self.id!r} has no sentences")
        if len(self.texts) != n or len(self.char_starts) != n:
            raise MechReasonError(f"trace {self.id!r}: spans, texts and char_starts differ in length")
        prev = self.prompt_len
        for i, (a, b) in enumerate(self.spans):
            if not prev <= a < b <= len(self.ids):
                raise MechReasonError(
                    f"trace {self.id!r}: sentence {i} token span {(a, b)} is not inside the "
                    f"generated tokens [{self.prompt_len}, {len(self.ids)}) in order")
            prev = b
        if not self.labels:
            object.__setattr__(self, "labels", tuple(() for _ in range(n)))

    @property
    def n(self) -> int:
        """Number of sentences."""
        return len(self.spans)

    def prefix_text(self, i: int) -> str:
        """The generated text before sentence ``i`` (``i == n``: all of it)."""
        return self.generated_text if i >= self.n else self.generated_text[:self.char_starts[i]]

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> AnchorTrace:
        """From a ``mechreason.traces.run`` record (a dict or a dataclass-like object)."""
        get = rec.get if isinstance(rec, Mapping) else lambda k, d=None: getattr(rec, k, d)
        prompt, gen, sents = get("prompt_ids"), get("generated_ids"), get("sentences")
        if prompt is None or gen is None:
            raise MechReasonError(f"trace {get('id')!r} lacks prompt_ids / generated_ids")
        prompt, gen = list(prompt), list(gen)
        sents = [s if isinstance(s, Mapping) else dataclasses.asdict(s) for s in sents or []]
        return cls(id=str(get("id", "trace")), ids=tuple(prompt + gen), prompt_len=len(prompt),
                   spans=tuple((int(s["tok_start"]), int(s["tok_end"])) for s in sents),
                   texts=tuple(s["text"] for s in sents),
                   char_starts=tuple(int(s["char_start"]) for s in sents),
                   generated_text=str(get("generated_text", "")),
                   labels=tuple(tuple(s.get("labels") or ()) for s in sents),
                   gold=_opt_str(get("gold")), answer=_opt_str(get("answer")),
                   correct=get("correct"))


def _opt_str(x: Any) -> str | None:
    return None if x is None else str(x)


def token_char_offsets(model: Model, generated_ids: Sequence[int]) -> list[int]:
    """Character offset in the decoded text at which each generated token starts."""
    offs, text_len = [], 0
    for k in range(len(generated_ids)):
        offs.append(text_len)
        text_len = len(str(model.tokenizer.decode(list(generated_ids[:k + 1]),
                                                  skip_special_tokens=True)))
    return offs


def trace_from_ids(model: Model, prompt_ids: Sequence[int], generated_ids: Sequence[int], *,
                   id: str = "trace", gold: str | None = None,
                   labeler: Any = None) -> AnchorTrace:
    """Split generated ids into sentences and map them to token spans.

    A sentence's tokens are those whose first character falls inside its character span,
    so a token that carries the leading space of a sentence belongs to it.
    """
    import bisect

    text = str(model.tokenizer.decode(list(generated_ids), skip_special_tokens=True))
    offs = token_char_offsets(model, generated_ids)
    base = len(prompt_ids)
    spans: list[tuple[int, int]] = []
    texts: list[str] = []
    starts: list[int] = []
    labels: list[tuple[str, ...]] = []
    for ch in split_sentences(text):
        a = bisect.bisect_right(offs, ch.start) - 1
        b = bisect.bisect_left(offs, ch.end)
        if b <= a or (spans and base + a < spans[-1][1]):
            continue  # a sentence inside one token: merged into its neighbour
        spans.append((base + max(a, 0), base + b))
        texts.append(ch.text)
        starts.append(ch.start)
        labels.append(tuple(labeler(ch.text)) if labeler else ())
    return AnchorTrace(id=id, ids=tuple(list(prompt_ids) + list(generated_ids)),
                       prompt_len=base, spans=tuple(spans), texts=tuple(texts),
                       char_starts=tuple(starts), generated_text=text, labels=tuple(labels),
                       gold=gold)
