"""Answer extraction and grading for reasoning traces (the evaluation stage).

Extraction tries, in order, the forms a trace may end with and takes the LAST match of
the first form that occurs: ``#### N`` (GSM8K), ``\\boxed{...}`` (MATH, braces balanced),
"the (final) answer is N" / "Answer: N" (after a leading computation: "the answer is
7 + 5 = 12" gives 12), then the last number in the text. Commas,
currency signs, percent signs, units and LaTeX wrappers are stripped; the result is a
normalised string (``"1200"``, ``"-3.5"``, ``"3/4"``, or a cleaned expression for
non-numeric MATH answers). A trace whose answer cannot be parsed gives ``None``, which
grades as ``None`` (unparsed), never as a crash.

Grading compares numbers exactly with :class:`fractions.Fraction` (``0.5 == 1/2``,
``3.50 == 3.5``) and anything else as normalised strings.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import NamedTuple

# A number: 1,234,567.89 (thousands groups) or plain digits, optional decimals, optional
# "/d" fraction. The sign is taken only when it is not a binary minus ("5-3").
_NUM = r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?(?![\d])"
_NUM_RE = re.compile(_NUM)
_HASH_RE = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS_RE = re.compile(
    r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:|=|would\s+be|will\s+be)\s*:?\s*([^\n]*)",
    re.IGNORECASE)
_CURRENCY = "$€£¥₹"
# Numbers joined by at least one operator, then "=": "7 + 5 + 8 = ", "$40 - $30 = ".
_LEADING_COMPUTATION = re.compile(
    r"[\s\d.,()$€£¥₹]*\d[\s\d.,()$€£¥₹]*(?:[-+*/×÷x][\s\d.,()$€£¥₹]*)+=\s*")
_LATEX_WRAPPERS = re.compile(r"\\(?:text|mathrm|textbf|mathbf|operatorname)\s*\{([^{}]*)\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac(\d)(\d)")


class Extraction(NamedTuple):
    """An extracted answer and where it was found in the text."""

    answer: str
    """The normalised answer string."""
    start: int
    """Character offset in the text where the answer's source (cue or number) begins."""
    method: str
    """Which rule found it: ``hash``, ``boxed``, ``answer_is`` or ``last_number``."""


def extract_answer(text: str) -> str | None:
    """The normalised final answer in ``text``, or None when none can be parsed."""
    found = extract(text)
    return found.answer if found else None


def extract(text: str) -> Extraction | None:
    """Like :func:`extract_answer`, with the answer's position and the rule used."""
    if not text:
        return None
    for method, finder in (("hash", _from_hash), ("boxed", _from_boxed),
                           ("answer_is", _from_answer_is), ("last_number", _from_last_number)):
        got = finder(text)
        if got is not None:
            return Extraction(got[0], got[1], method)
    return None


def _from_hash(text: str) -> tuple[str, int] | None:
    for m in reversed(list(_HASH_RE.finditer(text))):
        ans = _first_number(m.group(1)) or normalize(m.group(1))
        if ans:
            return ans, m.start()
    return None


def _from_boxed(text: str) -> tuple[str, int] | None:
    for start, content in reversed(boxed_contents(text)):
        ans = normalize(content)
        if ans:
            return ans, start
    return None


def _from_answer_is(text: str) -> tuple[str, int] | None:
    for m in reversed(list(_ANSWER_IS_RE.finditer(text))):
        clause = m.group(1)
        # "the answer is 7 + 5 + 8 = 21": the value is what the computation equals.
        while (eq := _LEADING_COMPUTATION.match(clause)) is not None:
            clause = clause[eq.end():]
        ans = _first_number(clause)
        if ans:
            return ans, m.start()
    return None


def _from_last_number(text: str) -> tuple[str, int] | None:
    nums = list(_NUM_RE.finditer(_strip_markup(text)))
    if not nums:
        return None
    m = nums[-1]
    return _canonical_number(m.group(0)), m.start()


def _strip_markup(s: str) -> str:
    """Remove markdown emphasis and currency signs without moving other characters'
    relative order (positions shift only by the removed characters)."""
    return re.sub(rf"[*_{re.escape(_CURRENCY)}]", " ", s)


def _first_number(s: str) -> str | None:
    s = _strip_markup(s)
    s = _fracs_to_slash(s.replace("\\$", " ").replace("\\!", ""))
    m = _NUM_RE.search(s)
    return _canonical_number(m.group(0)) if m else None


def _group(text: str, i: int) -> tuple[str, int] | None:
    """The balanced ``{...}`` group starting at ``text[i]`` (spaces skipped) and the
    offset after it, or None."""
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, j = 0, i
    while j < len(text):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
        if depth == 0:
            return text[i + 1:j - 1], j
    return None


def _fracs_to_slash(s: str) -> str:
    """``\\frac{a}{b}`` (also dfrac, tfrac, nested braces) -> ``a/b``, parenthesising
    a numerator or denominator that holds + or -."""
    while m := re.search(r"\\[dt]?frac(?=\s*\{)", s):
        num = _group(s, m.end())
        den = _group(s, num[1]) if num else None
        if num is None or den is None:
            break
        a, b = (f"({x})" if re.search(r"[-+]", x) else x for x in (_fracs_to_slash(num[0]),
                                                                    _fracs_to_slash(den[0])))
        s = s[:m.start()] + f"{a}/{b}" + s[den[1]:]
    return s


def boxed_contents(text: str) -> list[tuple[int, str]]:
    """Every ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text`` as (offset, content),
    with nested braces balanced; an unclosed box is skipped."""
    out: list[tuple[int, str]] = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((m.start(), text[m.end():i - 1]))
    return out


def normalize(s: str) -> str | None:
    """Normalise an answer string: strip LaTeX wrappers, currency, units, spaces; a
    lone number becomes its canonical form. Empty results give None."""
    s = s.strip().strip("*").strip()
    s = s.replace("\\$", "").replace("\\!", "").replace("\\,", "").replace("\\%", "%")
    s = s.replace("\\left", "").replace("\\right", "")
    s = _LATEX_WRAPPERS.sub(r"\1", s)
    s = _FRAC_SHORT.sub(r"\1/\2", _fracs_to_slash(s))
    s = s.strip().strip("$").strip().rstrip(".").strip()
    s = re.sub(rf"^[{re.escape(_CURRENCY)}]\s*", "", s)
    # A number followed by a unit word or percent sign: keep the number.
    m = re.fullmatch(rf"({_NUM})\s*(?:%|[A-Za-z][A-Za-z .]*)?", s)
    if m:
        return _canonical_number(m.group(1))
    s = re.sub(r"\s+", "", s)
    return s or None


def _canonical_number(s: str) -> str:
    """``"1,200.50"`` -> ``"1200.5"``, ``"6/8"`` -> ``"3/4"``, ``"-0"`` -> ``"0"``."""
    s = s.replace(",", "").replace(" ", "")
    value = to_fraction(s)
    if value is None:  # not a plain number: compared as text
        return s
    if value.denominator == 1:
        return str(value.numerator)
    if "/" in s:
        return f"{value.numerator}/{value.denominator}"
    whole, _, frac = s.partition(".")
    frac = frac.rstrip("0")
    return f"{whole}.{frac}" if frac else whole


def to_fraction(s: str) -> Fraction | None:
    """The exact value of a number string (``"3.5"``, ``"-7/2"``, ``"1,000"``), else None."""
    s = s.replace(",", "").replace(" ", "")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+", s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def grade(answer: str | None, gold: str) -> bool | None:
    """True/False when ``answer`` matches ``gold``; None when ``answer`` is None
    (unparsed). Numbers compare exactly as fractions; other answers as normalised
    strings (case-insensitive)."""
    if answer is None:
        return None
    gold_norm = normalize(gold) or gold.strip()
    a, g = to_fraction(answer), to_fraction(gold_norm)
    if a is not None and g is not None:
        return a == g
    return answer.casefold() == gold_norm.casefold()
