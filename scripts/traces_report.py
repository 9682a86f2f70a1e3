"""Markdown tables for docs/traces.md from traces JSONL files.

    python scripts/traces_report.py FILE.jsonl [FILE.jsonl ...]

Per task, style and difficulty: accuracy with a Wilson 95% interval, parse rate, mean
generated tokens and sentences, backtracking; and a control: the expected accuracy of
answering with a number drawn uniformly from the question's own numbers.
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict

from mechreason.traces.grading import extract, grade
from mechreason.traces.labels import FUNCTION_TAGS, RuleLabeller
from mechreason.traces.run import read_traces, relabel, summarize, wilson


def control(records: list[dict]) -> tuple[float, float, float]:
    """Expected accuracy (and Wilson interval at the same n) of a random question number."""
    exp = 0.0
    for r in records:
        nums = re.findall(r"\d+(?:\.\d+)?", r["question"].replace(",", ""))
        exp += sum(bool(grade(x, r["gold"])) for x in nums) / len(nums) if nums else 0.0
    n = len(records)
    lo, hi = wilson(round(exp), n)
    return exp / n, lo, hi


def table(records: list[dict], by: tuple[str, ...]) -> str:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[tuple(r.get(k) for k in by)].append(r)
    head = [*by, "n", "accuracy [95% CI]", "parsed", "finished (EOS)", "tokens", "sentences",
            "backtracking traces", "control: random question number"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summarize(records, by=by):
        key = tuple(row[k] for k in by)
        rs = groups[key]
        c, clo, chi = control(rs)
        eos = sum(r["finish_reason"] == "eos" for r in rs) / len(rs)
        lines.append("| " + " | ".join([
            *(str(k) for k in key), str(row["n"]),
            f"{row['accuracy']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]",
            f"{row['parse_rate']:.2f}", f"{eos:.2f}", f"{row['mean_tokens']:.1f}",
            f"{row['mean_sentences']:.1f}", f"{row['backtracking_traces']:.2f}",
            f"{c:.2f} [{clo:.2f}, {chi:.2f}]"]) + " |")
    return "\n".join(lines)


def label_table(records: list[dict]) -> str:
    head = ["task", "style", "sentences", *FUNCTION_TAGS, "backtracking", "uncertainty",
            "example_testing", "adding_knowledge"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summarize(records, by=("task", "style")):
        n_sent = round(row["mean_sentences"] * row["n"])
        lines.append("| " + " | ".join([
            row["task"], row["style"], str(n_sent),
            *(f"{row['tag:' + t]:.2f}" for t in FUNCTION_TAGS),
            *(f"{row['beh:' + b]:.3f}" for b in ("backtracking", "uncertainty",
                                                 "example_testing", "adding_knowledge"))]) + " |")
    return "\n".join(lines)


def paired(records: list[dict]) -> str:
    """cot vs direct on the problems both styles answered (counts of the 2x2 table)."""
    by: dict[tuple, dict[str, bool]] = defaultdict(dict)
    for r in records:
        by[(r["task"], r["problem_id"])][r["style"]] = r["correct"] is True
    out = []
    for task in sorted({t for t, _ in by}):
        pairs = [v for (t, _), v in by.items() if t == task and {"cot", "direct"} <= set(v)]
        if not pairs:
            continue
        both = sum(v["cot"] and v["direct"] for v in pairs)
        cot_only = sum(v["cot"] and not v["direct"] for v in pairs)
        direct_only = sum(v["direct"] and not v["cot"] for v in pairs)
        out.append(f"- {task}: {len(pairs)} problems in both styles; both right {both}, "
                   f"only cot right {cot_only}, only direct right {direct_only}")
    return "\n".join(out)


def regrade(r: dict) -> dict:
    """Answer and grade from the text with the current extraction rules."""
    found = extract(r["generated_text"])
    answer = found.answer if found else None
    return {**r, "answer": answer, "correct": grade(answer, r["gold"]),
            "extraction": found.method if found else None}


def by_method(records: list[dict]) -> str:
    """How the correct answers were found: a stated answer or the last-number fallback."""
    counts: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        if r["correct"] is True:
            counts[(r["task"], r["style"])][r["extraction"]] += 1
    return "\n".join(f"- {t} {s}: correct answers by rule: "
                     + ", ".join(f"{m} {k}" for m, k in sorted(c.items()))
                     for (t, s), c in sorted(counts.items()))


def main(paths: list[str]) -> int:
    # Labels and grades are recomputed with the current rules (a function of the text).
    records = relabel([regrade(r) for p in paths for r in read_traces(p)], RuleLabeller())
    print(table(records, ("task", "style", "difficulty")), "\n")
    print(table(records, ("task", "style")), "\n")
    print(label_table(records), "\n")
    print(paired(records))
    print(by_method(records))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
