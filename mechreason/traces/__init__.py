"""Traces (stage 1): problems (procedural arithmetic, GSM8K, MATH from a path), prompt
styles, generation into resumable JSONL trace records, answer grading, sentence
splitting with token spans and phases, and sentence behaviour labels.

Exports load lazily, so importing the package does not import torch.
"""

from __future__ import annotations

from mechreason._lazy import lazy_getattr

_EXPORTS = {
    "Problem": "tasks", "make_problems": "tasks", "TASKS": "tasks", "load_gsm8k": "tasks",
    "load_math": "tasks",
    "PromptStyle": "prompts", "get_style": "prompts", "render_prompt": "prompts",
    "register_style": "prompts",
    "grade": "grading", "extract_answer": "grading",
    "split_sentences": "sentences", "sentence_spans": "sentences", "SentenceSpan": "sentences",
    "Labeller": "labels", "RuleLabeller": "labels", "get_labeller": "labels",
    "label_sentence": "labels",
    "run_traces": "run", "read_traces": "run", "write_traces": "run", "append_record": "run",
    "build_record": "run", "relabel": "run", "summarize": "run", "trace_id": "run",
}

__all__ = list(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
