"""The Thought Anchors splitter's edge cases, exact token spans, and token phases."""

from __future__ import annotations

import pytest

from mechreason.traces.sentences import (
    char_to_token_span,
    decode_offsets,
    is_boundary,
    phase_of,
    sentence_spans,
    split_sentences,
    token_phases,
)

SPLIT_CASES = [
    ("", True, []),
    ("   \n\n  ", True, []),
    # Decimals never split: no whitespace after the point.
    ("The price is 3.5 dollars per kilo. Then we add 2.25 more.",
     True, ["The price is 3.5 dollars per kilo.", "Then we add 2.25 more."]),
    # A leading abbreviation is a short chunk and merges into the next one.
    ("Mr. Smith has 12 apples. He eats 3 of them.",
     True, ["Mr. Smith has 12 apples.", "He eats 3 of them."]),
    # Mid-sentence abbreviations split (the reference rule); the short piece merges on.
    ("We paid the bill to Dr. Jones at noon. Then we left the office.",
     True, ["We paid the bill to Dr.", "Jones at noon.", "Then we left the office."]),
    # Trailing text without punctuation: kept or dropped by option.
    ("First we add the two numbers. Then we mult", True,
     ["First we add the two numbers.", "Then we mult"]),
    ("First we add the two numbers. Then we mult", False, ["First we add the two numbers."]),
    # A blank line is a boundary even without punctuation.
    ("Step one is setup\n\nStep two is compute", True, ["Step one is setup", "Step two is compute"]),
    # Short numbered steps merge into the next chunk.
    ("1. Add 3 and 4 to get 7. 2. Double it to get 14.",
     True, ["1. Add 3 and 4 to get 7.", "2. Double it to get 14."]),
    # A short terminated last chunk is not a tail: kept either way.
    ("We add them all up now. 42.", False, ["We add them all up now.", "42."]),
    ("Why is that the case? It is! Yes indeed.",
     True, ["Why is that the case?", "It is! Yes indeed."]),
]


@pytest.mark.parametrize(("text", "keep_tail", "expected"), SPLIT_CASES)
def test_split_edge_cases(text: str, keep_tail: bool, expected: list[str]) -> None:
    chunks = split_sentences(text, keep_tail=keep_tail)
    assert [c.text for c in chunks] == expected
    for c in chunks:  # spans index the original text
        assert text[c.start:c.end] == c.text


@pytest.mark.parametrize(("text", "boundary"), [
    ("The answer is 3.", False), ("The answer is 3. ", True), ("3.5", False),
    ("Done!\n", True), ("a\n\n", True), ("no end", False)])
def test_is_boundary(text: str, boundary: bool) -> None:
    assert is_boundary(text) is boundary


TEXTS = [
    "Sam has 5 apples. He buys 3 more, so 5 + 3 = 8.\n\nThe answer is 8.",
    "Price: 3.5 dollars. Mr. Smith pays. Wait, is that right? Yes! Total = 7",
    "Ünïcödé café: 2€ each. Then 3 × 4 = 12 — done. 日本語の文。 OK fine now.",
    "",
]


def _assert_spans_exact(tokenizer, ids: list[int], prompt_len: int) -> None:
    text, offsets = decode_offsets(tokenizer, ids)
    assert len(offsets) == len(ids)
    assert all(s <= e for s, e in offsets)
    assert all(offsets[k][1] == offsets[k + 1][0] for k in range(len(offsets) - 1))
    spans = sentence_spans(text, offsets, prompt_len=prompt_len)
    assert [s.text for s in spans] == [c.text for c in split_sentences(text)]
    for s in spans:
        # Decoding the span's tokens gives the sentence, up to surrounding whitespace.
        piece = tokenizer.decode(ids[s.tok_start - prompt_len:s.tok_end - prompt_len],
                                 skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert piece.strip() == s.text
        assert prompt_len <= s.tok_start < s.tok_end <= prompt_len + len(ids)


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("prompt_len", [0, 7])
def test_token_spans_reconstruct_byte_tokenizer(tiny, text: str, prompt_len: int) -> None:
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    _assert_spans_exact(tiny.tokenizer, ids, prompt_len)


@pytest.mark.slow
@pytest.mark.parametrize("text", TEXTS)
def test_token_spans_reconstruct_smollm_tokenizer(smollm, text: str) -> None:
    ids = smollm.tokenizer(text, add_special_tokens=False)["input_ids"]
    _assert_spans_exact(smollm.tokenizer, ids, 11)


def test_partial_character_tokens_belong_to_their_sentence(tiny) -> None:
    # The byte tokenizer splits "é" into two tokens: the first has an empty span, and
    # the sentence's token span still starts at it.
    text = "Short intro here. é is a letter."
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    decoded, offsets = decode_offsets(tiny.tokenizer, ids)
    assert decoded == text
    k = text.index("é")
    assert len(ids) == len(text.encode())
    i, j = char_to_token_span(offsets, k, len(text))
    assert offsets[i] == (k, k) and offsets[i + 1] == (k, k + 1)
    assert tiny.tokenizer.decode(ids[i:j]) == text[k:]


@pytest.mark.parametrize(("answer_start", "expected"), [
    (None, ["prompt"] * 3 + ["reasoning"] * 4),
    (5, ["prompt"] * 3 + ["reasoning"] * 2 + ["answer"] * 2),
    (3, ["prompt"] * 3 + ["answer"] * 4),
])
def test_phases(answer_start: int | None, expected: list[str]) -> None:
    assert token_phases(7, 3, answer_start) == expected
    assert [phase_of(p, 3, answer_start) for p in range(7)] == expected
