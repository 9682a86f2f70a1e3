"""The rule-based labeller: function tags and behaviours on planted sentences."""

from __future__ import annotations

import pytest

from mechreason.errors import MechReasonError
from mechreason.traces.labels import (
    BEHAVIOURS,
    FUNCTION_TAGS,
    RuleLabeller,
    behaviours,
    get_labeller,
    label_sentence,
    parse_tag,
)

TAG_CASES = [
    ("The answer is 42.", "final_answer_emission"),
    ("#### 17", "final_answer_emission"),
    ("Wait, that doesn't look right.", "uncertainty_management"),
    ("Hmm, maybe I misread the question.", "uncertainty_management"),
    ("Let me double-check this result.", "self_checking"),
    ("To verify, 8 - 3 = 5 matches.", "self_checking"),
    ("First, we need to find how many apples Tom has left.", "plan_generation"),
    ("We are given that Tom has 12 apples.", "problem_setup"),
    ("Recall that there are 60 minutes in an hour.", "fact_retrieval"),
    ("12 x 3 = 36.", "active_computation"),
    ("She earns 0.2 * 50 = 10 dollars.", "active_computation"),
    ("Therefore, Tom has 36 apples in total.", "result_consolidation"),
    ("Step 1: The problem states that Zoe has 25 coins.", "problem_setup"),
]


@pytest.mark.parametrize(("text", "tag"), TAG_CASES)
def test_primary_tag(text: str, tag: str) -> None:
    assert label_sentence(text)[0] == tag


def test_tags_are_the_eight_and_ordered() -> None:
    assert len(FUNCTION_TAGS) == 8 and len(set(FUNCTION_TAGS)) == 8
    tags = label_sentence("So 5 + 3 = 8, and the answer is 8.")
    assert tags == ["final_answer_emission", "active_computation", "result_consolidation"]
    assert label_sentence("Blue skies ahead.") == []
    assert label_sentence("Step 2: Tom ends up with 3 times as many.") == []
    assert label_sentence("Blue skies ahead.", first=True) == ["problem_setup"]
    assert RuleLabeller().label(["Blue skies ahead.", "Blue skies ahead."]) == [
        ["problem_setup"], []]


@pytest.mark.parametrize(("text", "expected"), [
    ("Wait, actually I made a mistake.", ["backtracking"]),
    ("Alternatively, we could count them.", ["backtracking"]),
    ("I think it is probably 5.", ["uncertainty"]),
    ("For example, let's try 3 apples.", ["example_testing"]),
    ("Recall that a dozen is 12.", ["adding_knowledge"]),
    ("Step 2: Tom ends up with 3 times as many.", []),
    ("Hmm, maybe we should test it with 2.", ["uncertainty", "example_testing"]),
    ("5 + 3 = 8.", []),
    ("The waiter brought maps.", []),  # cue words only on word boundaries
])
def test_behaviours(text: str, expected: list[str]) -> None:
    assert behaviours(text) == expected
    assert set(expected) <= set(BEHAVIOURS)


@pytest.mark.parametrize(("reply", "tag"), [
    ("active_computation", "active_computation"), ("Category: Self Checking.", "self_checking"),
    ("it is plan-generation, not problem setup", "plan_generation"), ("no idea", None)])
def test_parse_judge_reply(reply: str, tag: str | None) -> None:
    assert parse_tag(reply) == tag


def test_llm_judge_labels_through_model(tiny) -> None:
    judge = get_labeller("llm-judge", tiny)
    out = judge.label(["12 x 3 = 36.", "The answer is 36."], question="q")
    assert len(out) == 2 and all(set(t) <= set(FUNCTION_TAGS) for t in out)
    with pytest.raises(MechReasonError, match="rules"):
        get_labeller("oracle")
