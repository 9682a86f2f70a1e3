"""Sentences: the Thought Anchors splitter (Bogdan et al. 2025), shared by traces,
attribution and online sentence-start steering.

A chunk ends after ``.``, ``?`` or ``!`` followed by whitespace, or at a blank line.
Chunks shorter than ``min_chars`` (10) are merged into the next one, so "1." or
"Step 2." do not stand alone. An unterminated tail is dropped or kept by option.
Spans are character offsets into the original text; a chunk's text is the stripped
slice ``text[start:end]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

# A boundary: terminal punctuation then whitespace, or a blank line. The boundary's
# end is where the next chunk may begin (after the whitespace).
_BOUNDARY = re.compile(r"(?<=[.?!])\s+|\n\s*\n")
_END = re.compile(r"[.?!]\s*$")
MIN_CHARS = 10


class Chunk(NamedTuple):
    """One sentence: its stripped text and its character span in the source."""

    text: str
    start: int
    """Offset of the first non-space character."""
    end: int
    """Offset one past the last non-space character."""


def split_sentences(text: str, *, keep_tail: bool = True, min_chars: int = MIN_CHARS) -> list[Chunk]:
    """Split ``text`` into chunks (see the module docstring).

    Args:
        keep_tail: keep the last chunk even if it has no terminal punctuation.
        min_chars: chunks shorter than this merge into the next.
    """
    raw: list[tuple[int, int, bool]] = []  # (start, end, terminated)
    pos = 0
    for m in _BOUNDARY.finditer(text):
        raw.append((pos, m.start(), True))
        pos = m.end()
    if pos < len(text):  # the rest: terminated if it ends in . ? ! (the end of a trace)
        raw.append((pos, len(text), bool(_END.search(text, pos))))
    chunks: list[Chunk] = []
    pending: int | None = None  # start of a too-short chunk waiting to merge
    for start, end, terminated in raw:
        start = pending if pending is not None else start
        span = _strip(text, start, end)
        if span is None:
            continue
        s, e = span
        if e - s < min_chars and terminated:
            pending = s
            continue
        pending = None
        if terminated or keep_tail:
            chunks.append(Chunk(text[s:e], s, e))
    if pending is not None:  # a short but terminated last chunk: not a tail, keep it
        span = _strip(text, pending, len(text))
        if span:
            chunks.append(Chunk(text[span[0]:span[1]], *span))
    return chunks


def _strip(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if end > start else None


def is_boundary(text: str) -> bool:
    """True when ``text`` (generated so far) ends at a sentence boundary, so that the
    next token starts a sentence. Used online, token by token, during steering; it
    agrees with :func:`split_sentences` on where chunks start (short chunks aside)."""
    return bool(re.search(r"[.?!]\s+$|\n\s*\n\s*$", text))


# ---------------------------------------------------------------- token spans and phases

def decode_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The text of ``ids`` and each token's (start, end) character offsets in it.

    The offset mapping comes from decoding growing prefixes (so it holds for the ids a
    model generated, which re-tokenizing the text need not reproduce): token i ends
    where the decoded prefix ``ids[:i+1]`` ends. A token that only completes part of a
    multi-byte character gets an empty span; the token that completes it owns it.
    """
    ids = list(ids)

    def dec(x: list[int]) -> str:
        return str(tokenizer.decode(x, skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False))

    text = dec(ids)
    offsets: list[tuple[int, int]] = []
    prev = 0
    for i in range(len(ids)):
        prefix = dec(ids[:i + 1])
        end = len(prefix) if text.startswith(prefix) else prev
        offsets.append((prev, max(end, prev)))
        prev = max(end, prev)
    return text, offsets


def char_to_token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    """The token range ``[i, j)`` covering characters ``[start, end)``: from the first
    token ending after ``start`` (pulled back over empty partial-character tokens) to
    the last token starting before ``end``."""
    if end <= start:
        raise ValueError(f"empty character span [{start}, {end})")
    i = next(k for k, (_, e) in enumerate(offsets) if e > start)
    while i > 0 and offsets[i - 1][0] == offsets[i - 1][1] == offsets[i][0]:
        i -= 1
    j = max(k for k, (s, e) in enumerate(offsets) if s < end and e > s) + 1
    return i, j


class SentenceSpan(NamedTuple):
    """A sentence with character offsets in the generated text and absolute token
    positions in ``prompt_ids + generated_ids`` (end exclusive)."""

    idx: int
    text: str
    char_start: int
    char_end: int
    tok_start: int
    tok_end: int


def sentence_spans(text: str, offsets: Sequence[tuple[int, int]], *, prompt_len: int = 0,
                   keep_tail: bool = True, min_chars: int = MIN_CHARS) -> list[SentenceSpan]:
    """Split ``text`` (a generation whose token offsets are ``offsets``) into sentences
    with exact token spans, shifted by ``prompt_len`` to absolute positions."""
    out = []
    for k, c in enumerate(split_sentences(text, keep_tail=keep_tail, min_chars=min_chars)):
        i, j = char_to_token_span(offsets, c.start, c.end)
        out.append(SentenceSpan(k, c.text, c.start, c.end, prompt_len + i, prompt_len + j))
    return out


def phase_of(pos: int, prompt_len: int, answer_tok_start: int | None) -> str:
    """The phase of absolute token position ``pos``: prompt, reasoning or answer."""
    if pos < prompt_len:
        return "prompt"
    if answer_tok_start is not None and pos >= answer_tok_start:
        return "answer"
    return "reasoning"


def token_phases(n_tokens: int, prompt_len: int, answer_tok_start: int | None) -> list[str]:
    """The phase of every position ``0..n_tokens-1`` (see :func:`phase_of`)."""
    return [phase_of(p, prompt_len, answer_tok_start) for p in range(n_tokens)]
