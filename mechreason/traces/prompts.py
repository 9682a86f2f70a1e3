"""Prompt styles as data: how a problem is put to the model (the traces stage).

A :class:`PromptStyle` is a set of templates, not a code path. ``cot`` asks for
step-by-step reasoning (Kojima et al. 2022), ``direct`` for the answer only, and
``fewshot-base`` is plain text with worked examples for base models without a chat
template (Wei et al. 2022). Chat models get ``user`` (and ``system``) through their
chat template; a model without a chat template gets the style's ``base`` template
(few-shot plain text) instead. Users add styles with :func:`register_style`.
Every style asks for "The answer is N", which ``grading.extract_answer`` reads.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from mechreason.errors import MechReasonError, unknown

if TYPE_CHECKING:
    from mechreason.model.loading import Model
    from mechreason.traces.tasks import Problem


@dataclasses.dataclass(frozen=True, kw_only=True)
class PromptStyle:
    """Templates for one way of asking; ``{question}`` is the problem text."""

    name: str
    """What users pass as ``--style``."""
    user: str
    """The user turn for chat models."""
    base: str
    """Plain text for models without a chat template (and for ``chat=False`` styles)."""
    system: str | None = None
    """Optional system turn for chat models."""
    chat: bool = True
    """False: always render ``base`` as plain text, even for chat models."""
    stop: tuple[str, ...] = ()
    """Stop strings for plain-text rendering (the next few-shot question)."""

    def __post_init__(self) -> None:
        for field in ("user", "base"):
            if "{question}" not in getattr(self, field):
                raise MechReasonError(f"style {self.name!r}: template {field!r} lacks {{question}}")


_EXAMPLES = (
    ("Sam has 5 apples. He buys 3 more apples. How many apples does Sam have now?",
     "Sam starts with 5 apples. He buys 3 more, so 5 + 3 = 8. The answer is 8."),
    ("A box holds 4 rows of 6 pencils. 5 pencils are taken out. How many pencils are left?",
     "The box holds 4 x 6 = 24 pencils. Taking out 5 leaves 24 - 5 = 19. The answer is 19."),
)
_FEWSHOT = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in _EXAMPLES)
_FEWSHOT_DIRECT = "".join(f"Question: {q}\nAnswer: The answer is {a.split()[-1][:-1]}.\n\n"
                          for q, a in _EXAMPLES)
_BASE_STOP = ("\nQuestion:",)

STYLES: dict[str, PromptStyle] = {}


def register_style(style: PromptStyle, *, replace: bool = False) -> PromptStyle:
    """Add a style (``replace=True`` to overwrite one of the same name)."""
    if style.name in STYLES and not replace:
        raise MechReasonError(f"style {style.name!r} exists; pass replace=True to overwrite it")
    STYLES[style.name] = style
    return style


register_style(PromptStyle(
    name="cot",
    user="{question}\nLet's think step by step. End with \"The answer is N.\"",
    base=_FEWSHOT + "Question: {question}\nAnswer:", stop=_BASE_STOP))
register_style(PromptStyle(
    name="direct",
    user="{question}\nGive only the final answer, as \"The answer is N.\" Do not explain.",
    base=_FEWSHOT_DIRECT + "Question: {question}\nAnswer: The answer is", stop=_BASE_STOP))
register_style(PromptStyle(
    name="fewshot-base", chat=False,
    user="{question}", base=_FEWSHOT + "Question: {question}\nAnswer:", stop=_BASE_STOP))


def get_style(name: str) -> PromptStyle:
    """A registered style by name."""
    if name not in STYLES:
        raise unknown("prompt style", name, STYLES)
    return STYLES[name]


def uses_chat(model: Model, style: PromptStyle) -> bool:
    """Whether ``style`` renders through ``model``'s chat template."""
    return style.chat and model.has_chat_template


def render_prompt(model: Model, problem: Problem, style: str | PromptStyle) -> str:
    """The prompt text for ``problem``: chat template for chat models, plain few-shot
    text for base models (or ``chat=False`` styles)."""
    st = get_style(style) if isinstance(style, str) else style
    if uses_chat(model, st):
        return model.format_prompt(st.user.format(question=problem.question), system=st.system)
    return st.base.format(question=problem.question)


def stop_strings(model: Model, style: str | PromptStyle) -> tuple[str, ...]:
    """Stop strings to pass to generation (only for plain-text rendering)."""
    st = get_style(style) if isinstance(style, str) else style
    return () if uses_chat(model, st) else st.stop
