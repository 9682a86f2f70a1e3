"""Tasks: the procedural generator (determinism, independently checked answers) and
the GSM8K / MATH loaders."""

from __future__ import annotations

import ast
import json
import operator
import re
from pathlib import Path

import pytest

from mechreason.errors import MechReasonError
from mechreason.traces import tasks
from mechreason.traces.grading import grade
from mechreason.traces.prompts import STYLES, PromptStyle, register_style, render_prompt
from mechreason.traces.tasks import load_gsm8k, load_math, make_problems

GSM8K = Path("/work/shared/data/gsm8k/train.jsonl")
MATH_SAMPLE = Path(__file__).parent / "data" / "math_sample.jsonl"
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(node: ast.AST) -> int:
    """An independent evaluator of the stored expression that also checks every
    intermediate value is a non-negative integer and every division exact."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        assert isinstance(node.value, int)
        return node.value
    assert isinstance(node, ast.BinOp)
    a, b = _evaluate(node.left), _evaluate(node.right)
    if isinstance(node.op, ast.Div):
        assert a % b == 0, "division must be exact"
        out = a // b
    else:
        out = _OPS[type(node.op)](a, b)
    assert out >= 0
    return out


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_generator_is_deterministic_per_seed(seed: int) -> None:
    a = make_problems("arithmetic", 25, seed=seed)
    assert a == make_problems("arithmetic", 25, seed=seed)
    assert [p.question for p in a] != [p.question for p in make_problems("arithmetic", 25,
                                                                          seed=seed + 1)]
    assert len({p.id for p in a}) == 25


@pytest.mark.parametrize("difficulty", [1, 2, 3, 4, 5])
def test_answers_match_independent_evaluation(difficulty: int) -> None:
    problems = make_problems("arithmetic", 60, seed=3, difficulty=difficulty)
    for p in problems:
        assert p.difficulty == difficulty
        assert _evaluate(ast.parse(p.meta["expression"], mode="eval")) == int(p.gold)
        # The text states the start value and one operand per step, in order.
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        assert numbers == [int(x) for x in re.findall(r"\d+", p.meta["expression"])]
        assert len(numbers) == difficulty + 1
        assert p.question.endswith("have now?")


def test_difficulty_cycles_and_templates_vary() -> None:
    problems = make_problems("arithmetic", 100, seed=0)
    assert [p.difficulty for p in problems[:10]] == [1, 2, 3, 4, 5] * 2
    ops = {op for p in problems for op in p.meta["ops"]}
    assert ops == {"+", "-", "*", "/"}
    # Every phrasing of every operation occurs (3 per operation).
    names, items = "|".join(tasks._NAMES), "|".join(tasks._ITEMS)
    shapes = set()
    for p in problems:
        for sent in re.split(r"(?<=[.?])\s", p.question)[1:-1]:
            sent = re.sub(rf"\b(?:{names})\b", "{name}", sent)
            shapes.add(re.sub(rf"\b(?:{items})\b", "{item}", re.sub(r"\d+", "{k}", sent)))
    assert shapes == {t for ts in tasks._STEPS.values() for t in ts}


@pytest.mark.skipif(not GSM8K.is_file(), reason="GSM8K dev data absent")
def test_gsm8k_real_file() -> None:
    problems = load_gsm8k(GSM8K)
    assert len(problems) > 7000
    assert problems[0].gold == "72" and problems[0].question.startswith("Natalia")
    assert all(grade(p.gold, p.gold) for p in problems[:500])
    sample = make_problems("gsm8k", 20, seed=1, data_file=GSM8K)
    assert sample == make_problems("gsm8k", 20, seed=1, data_file=GSM8K)
    assert len({p.id for p in sample}) == 20
    assert {p.id for p in sample} <= {p.id for p in make_problems("gsm8k", 60, seed=1,
                                                                  data_file=GSM8K)}
    hard = make_problems("gsm8k", 10, seed=0, difficulty=5, data_file=GSM8K)
    assert all(p.difficulty == 5 and p.meta["steps"] >= 5 for p in hard)


def test_gsm8k_jsonl(tmp_path: Path) -> None:
    f = tmp_path / "g.jsonl"
    rows = [{"question": "Q1?", "answer": "a <<2*3=6>>6 b <<6+1=7>>7\n#### 1,234"},
            {"question": "Q2?", "answer": "x\n#### -5"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    p = load_gsm8k(f)
    assert [(x.gold, x.difficulty) for x in p] == [("1234", 2), ("-5", 1)]


@pytest.mark.parametrize(("content", "match"), [
    ("", "no records"), ('{"question": "q"}\n', "lacks"), ('{"question": "q", "answer": "7"}',
                                                            "####"),
    ('{"question": "q", "answer": "#### 1"}\nnot json\n', "not valid JSON")])
def test_gsm8k_bad_files(tmp_path: Path, content: str, match: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(MechReasonError, match=match):
        load_gsm8k(f)


def test_math_loader_jsonl_and_directory(tmp_path: Path) -> None:
    problems = load_math(MATH_SAMPLE)
    assert problems[0].gold == "3/4" and problems[0].difficulty == 1
    assert grade("0.75", problems[0].gold)
    assert [p.meta["subject"] for p in problems[:2]] == ["Prealgebra", "Algebra"]
    d = tmp_path / "MATH" / "train" / "algebra"
    d.mkdir(parents=True)
    (d / "1.json").write_text(json.dumps({"problem": "p", "solution": "so \\boxed{\\frac{\\sqrt{3}}{2}}",
                                          "level": "Level 5", "type": "Algebra"}))
    (got,) = load_math(tmp_path / "MATH")
    assert (got.gold, got.difficulty) == ("\\sqrt{3}/2", 5)


def test_bad_task_arguments() -> None:
    with pytest.raises(MechReasonError, match="arithmetic"):
        make_problems("arith", 3, seed=0)
    with pytest.raises(MechReasonError, match="difficulty"):
        make_problems("arithmetic", 3, seed=0, difficulty=9)
    with pytest.raises(MechReasonError, match="does not exist"):
        make_problems("gsm8k", 3, seed=0, data_file="/nonexistent.jsonl")


def test_prompt_styles_render(tiny) -> None:
    p = make_problems("arithmetic", 1, seed=0)[0]
    chat = render_prompt(tiny, p, "cot")
    assert chat.startswith("<|im_start|>user\n") and p.question in chat
    assert "step by step" in chat and chat.endswith("<|im_start|>assistant\n")
    base = render_prompt(tiny, p, "fewshot-base")
    assert base.startswith("Question: ") and base.endswith(f"Question: {p.question}\nAnswer:")
    style = PromptStyle(name="terse-test", user="Q: {question} A?", base="{question} =")
    register_style(style)
    try:
        assert "Q: " + p.question + " A?" in render_prompt(tiny, p, "terse-test")
        with pytest.raises(MechReasonError, match="exists"):
            register_style(style)
    finally:
        STYLES.pop("terse-test")
    with pytest.raises(MechReasonError, match="cot"):
        render_prompt(tiny, p, "cott")
    with pytest.raises(MechReasonError, match="question"):
        PromptStyle(name="x", user="no slot", base="{question}")
