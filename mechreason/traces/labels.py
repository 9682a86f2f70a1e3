"""Sentence labels: the 8 Thought Anchors function tags (Bogdan et al. 2025) and the
reasoning behaviours Venhoff et al. (2025a) count, from a transparent rule-based
labeller, behind an interface where an LLM judge (a local model) can be plugged in.

Rules are cue words and patterns, one table per tag (``FUNCTION_RULES``) and per
behaviour (``BEHAVIOUR_RULES``), matched case-insensitively on word boundaries. A
sentence gets every tag whose rule matches, in the order of ``FUNCTION_TAGS``
(so ``tags[0]`` is the primary one); a sentence no rule matches gets ``[]``.
``label_sentence(text, first=True)`` also tags the first sentence of a trace as
``problem_setup`` when it restates the question (no computation in it).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from mechreason.errors import unknown

if TYPE_CHECKING:
    from mechreason.model.loading import Model

FUNCTION_TAGS: tuple[str, ...] = (
    "final_answer_emission", "uncertainty_management", "self_checking", "plan_generation",
    "active_computation", "result_consolidation", "fact_retrieval", "problem_setup",
)
"""The 8 Thought Anchors function tags, in priority order."""

BEHAVIOURS: tuple[str, ...] = ("backtracking", "uncertainty", "example_testing",
                               "adding_knowledge")
"""The behaviours Venhoff et al. label and steer."""


def _words(*cues: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])(?:" + "|".join(cues) + r")(?![\w])", re.IGNORECASE)


# An arithmetic step: "3 + 4 = 7", "12 x 3", "5 times 6", "48/2".
_ARITH = r"\d[\d,.]*\s*(?:[-+*/×x÷]|times|plus|minus|divided by|multiplied by)\s*\$?\d"

FUNCTION_RULES: dict[str, re.Pattern[str]] = {
    "final_answer_emission": re.compile(
        r"(?:the\s+(?:final\s+)?answer\s+is|final\s+answer|answer\s*:|\\boxed|####)",
        re.IGNORECASE),
    "uncertainty_management": _words(
        "wait", "hmm+", "actually", "alternatively", "not sure", "maybe", "perhaps",
        "let me re(?:consider|think|evaluate|read)", "on second thought", "I made a mistake",
        "that(?:'s| is) (?:not right|wrong|incorrect)", "hold on", "confus(?:ed|ing)"),
    "self_checking": _words(
        "check(?:ing|s)?", "verify(?:ing)?", "verif(?:y|ied|ication)", "double[- ]check",
        "confirm(?:s|ed|ing)?", "makes sense", "sanity", "plug(?:ging)? (?:it |this )?back",
        "substitut(?:e|ing) back", "is (?:this|that) (?:right|correct)", "correct\\?"),
    "plan_generation": _words(
        "let'?s", "let us", "we (?:need|have|want) to", "I (?:need|will|should)", "I'll",
        "first,?", "next,?", "then we", "to (?:find|solve|calculate|determine)",
        "the (?:plan|approach|strategy|goal) is", "we can (?:find|solve|use|start)"),
    "problem_setup": _words(
        "we are given", "given that", "the problem (?:says|asks|states)", "we know that .* has",
        "how (?:many|much)",
        "denote", "let \\w+ (?:be|=)", "the question"),
    "fact_retrieval": _words(
        "recall", "by definition", "the formula", "formula for", "remember that",
        "there are \\d+ \\w+ in (?:a|an|one)", "is defined as", "(?:a|one) (?:week|day|hour|"
        "dozen|year|minute) (?:has|is)", "\\d+ (?:minutes|hours|days|inches|cents) in"),
    "active_computation": re.compile(_ARITH + r"|=\s*\$?-?\d|\b(?:multiply|divide|add|subtract)"
                                     r"(?:ing)?\b", re.IGNORECASE),
    "result_consolidation": _words(
        "so", "therefore", "thus", "hence", "in total", "altogether", "which means",
        "this (?:gives|means)", "total of", "in all", "that means", "now has"),
}

BEHAVIOUR_RULES: dict[str, re.Pattern[str]] = {
    "backtracking": _words(
        "wait", "alternatively", "actually", "on second thought", "hold on", "no,",
        "let me re(?:consider|think|do|calculate|evaluate|check)", "I made a mistake",
        "that(?:'s| is) (?:not right|wrong|incorrect)", "instead", "scratch that",
        "go back", "mistake"),
    "uncertainty": _words(
        "maybe", "perhaps", "not sure", "might", "possibly", "I think", "I guess",
        "hmm+", "seems?", "probably", "unclear", "could be"),
    "example_testing": _words(
        "for example", "for instance", "let'?s try", "try(?:ing)? (?:with|a|an|some)",
        "suppose", "test(?:ing)?", "plug(?:ging)? in", "if we take", "say we have",
        "consider the case"),
    "adding_knowledge": _words(
        "recall", "by definition", "the formula", "is known",
        "it is a fact", "there are \\d+ \\w+ in (?:a|an|one)", "remember that",
        "according to", "is defined as"),
}


def label_sentence(text: str, *, first: bool = False) -> list[str]:
    """The function tags of one sentence, primary first (``[]`` when none applies)."""
    tags = [t for t in FUNCTION_TAGS if FUNCTION_RULES[t].search(text)]
    if first and "problem_setup" not in tags and "active_computation" not in tags:
        tags.append("problem_setup")
        tags.sort(key=FUNCTION_TAGS.index)
    return tags


def behaviours(text: str) -> list[str]:
    """The Venhoff behaviours a sentence shows (backtracking, uncertainty, ...)."""
    return [b for b in BEHAVIOURS if BEHAVIOUR_RULES[b].search(text)]


class Labeller(Protocol):
    """Anything that labels a trace's sentences: one list of function tags each."""

    @property
    def name(self) -> str: ...

    def label(self, sentences: Sequence[str], *, question: str = "") -> list[list[str]]: ...


@dataclasses.dataclass(frozen=True)
class RuleLabeller:
    """The transparent cue-word labeller (:func:`label_sentence`)."""

    name: str = "rules"

    def label(self, sentences: Sequence[str], *, question: str = "") -> list[list[str]]:
        return [label_sentence(s, first=i == 0) for i, s in enumerate(sentences)]


_JUDGE_PROMPT = (
    "Classify the sentence from a solution to a math problem into one category.\n"
    "Categories: {tags}.\nProblem: {question}\nSentence: {sentence}\n"
    "Answer with the category name only.")


@dataclasses.dataclass(frozen=True)
class LLMJudgeLabeller:
    """Ask a local model (through the same :class:`Model` object) for each sentence's
    tag; the first tag name in its reply wins, and a reply naming none falls back to
    the rule labeller."""

    model: Model
    max_new_tokens: int = 12
    batch_size: int = 8
    name: str = "llm-judge"

    def label(self, sentences: Sequence[str], *, question: str = "") -> list[list[str]]:
        from mechreason.model.generation import SamplingConfig, generate

        prompts = [self.model.format_prompt(_JUDGE_PROMPT.format(
            tags=", ".join(FUNCTION_TAGS), question=question, sentence=s)) for s in sentences]
        ids = [self.model.encode(p) for p in prompts]
        cfg = SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=0.0,
                             batch_size=self.batch_size)
        out = []
        for s, gen in zip(sentences, generate(self.model, ids, cfg)):
            tag = parse_tag(gen.text)
            out.append([tag] if tag else label_sentence(s))
        return out


def parse_tag(reply: str) -> str | None:
    """The first function tag named in a judge's reply (underscores or spaces)."""
    low = reply.lower().replace("-", "_")
    hits = [(low.find(t), t) for t in FUNCTION_TAGS if t in low]
    hits += [(low.find(t.replace("_", " ")), t) for t in FUNCTION_TAGS
             if t.replace("_", " ") in low]
    return min(hits)[1] if hits else None


def get_labeller(name: str, model: Model | None = None) -> Labeller:
    """A labeller by name: ``rules`` or ``llm-judge`` (which needs ``model``)."""
    if name == "rules":
        return RuleLabeller()
    if name == "llm-judge" and model is not None:
        return LLMJudgeLabeller(model)
    raise unknown("labeller", name, ["rules", "llm-judge"])
