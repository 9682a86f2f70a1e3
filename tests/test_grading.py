"""Answer extraction and grading on a table of tricky strings."""

from __future__ import annotations

import pytest

from mechreason.traces.grading import extract, extract_answer, grade, normalize, to_fraction

EXTRACT_CASES = [
    # (text, expected normalised answer)
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
    ("#### 1,234", "1234"),
    ("First 3 then 4.\n#### $1,200.50", "1200.5"),
    ("So x = 5. Thus \\boxed{\\frac{3}{4}}.", "3/4"),
    ("\\boxed{\\dfrac12}", "1/2"),
    ("nested \\boxed{\\frac{\\sqrt{2}}{2}} done", "\\sqrt{2}/2"),
    ("\\boxed{2} first, then \\boxed{7}", "7"),
    ("\\boxed{x^2 + 1}", "x^2+1"),
    ("\\boxed{10\\%}", "10"),
    ("\\boxed{\\text{(B)}}", "(B)"),
    ("The answer is 42.", "42"),
    ("The answer is: $3.50.", "3.5"),
    ("So the final answer is -7 degrees", "-7"),
    ("**Answer:** 1,000,000", "1000000"),
    ("The answer is 12 apples. Wait, 5 + 3 = 8.", "12"),
    ("The answer is 3/4 of a cup", "3/4"),
    ("answer = 0.250", "0.25"),
    ("Step 1. 5 + 3 = 8. Step 2. 8 * 2 = 16 marbles.", "16"),
    ("He paid $15 in total.", "15"),
    ("It costs 2.5 dollars, minus 1.", "1"),
    ("5-3 is 2", "2"),
    ("The temperature is -4", "-4"),
    ("The list is 1, 2, 3", "3"),
    ("Version 3.5.", "3.5"),
    ("The answer is 6/8", "3/4"),
    ("The answer is 40%.", "40"),
    ("So, the answer is 7 + 5 + 8 = 21.\n\nThe answer is N.", "21"),  # a real SmolLM2 ending
    ("The answer is $40 - $30 = $10.", "10"),
    ("The answer is 3 x 4 = 12 eggs", "12"),
    ("The answer is 12 (3 + 9 = 12 was checked)", "12"),
    ("The answer is 2023 = the year", "2023"),
]

UNPARSED = ["", "I don't know.", "The answer is unclear", "\\boxed{", "no digits here!"]


@pytest.mark.parametrize(("text", "expected"), EXTRACT_CASES)
def test_extract_answer(text: str, expected: str) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", UNPARSED)
def test_unparsed_is_none(text: str) -> None:
    assert extract_answer(text) is None
    assert grade(extract_answer(text), "3") is None


@pytest.mark.parametrize(("text", "method", "start"), [
    ("x\n#### 5", "hash", 2), ("so \\boxed{5}", "boxed", 3),
    ("So the answer is 5", "answer_is", 3), ("Final answer: 5", "answer_is", 0),
    ("5 and 16", "last_number", 6)])
def test_extraction_method_and_position(text: str, method: str, start: int) -> None:
    found = extract(text)
    assert found is not None
    assert (found.method, found.start) == (method, start)


@pytest.mark.parametrize(("answer", "gold", "ok"), [
    ("0.5", "1/2", True), ("3.50", "3.5", True), ("72", "72", True), ("72", "73", False),
    ("1/3", "0.333", False), ("1/3", "0.3333333333", False), ("-2", "-2.0", True),
    ("1000", "1,000", True), ("x^2+1", "x^2 + 1", True), ("(B)", "(b)", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True), ("7", "$7", True), ("7", "7 apples", True),
    (None, "7", None),
])
def test_grade_exact(answer: str | None, gold: str, ok: bool | None) -> None:
    assert grade(answer, gold) is ok


def test_fractions_exact() -> None:
    # Exact comparison: the float 0.1 + 0.2 != 0.3 trap does not apply.
    assert to_fraction("0.3") == to_fraction("3/10")
    assert to_fraction("1/0") is None
    assert to_fraction("abc") is None
    assert normalize("  ") is None
