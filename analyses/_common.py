"""Shared plumbing of the analyses scripts: arguments, model and trace set-up, interval
helpers and the report every script writes (``report.md``, ``results.json``,
``meta.json`` and, where one fits, a figure through :mod:`mechreason.report.plots`).

The scripts reproduce seed methods at small scale with the stage modules; this module
holds only what all seven share, so each script reads as its method.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import math
import random
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("mechreason") is None:  # `python analyses/x.py` puts analyses/,
    sys.path.insert(0, str(REPO))  # not the repository root, on the path

from mechreason.model.weights import DEFAULT_MODEL  # noqa: E402  (after the path fix above)

log = logging.getLogger("analyses")
_STARTED = [time.monotonic()]  # reset by start(); the report states the wall time


def parser(doc: str, *, n: int, seeds: bool = False) -> argparse.ArgumentParser:
    """The arguments every script takes; scripts add their own. ``seeds``: the script
    repeats itself over ``--seeds S...`` instead of taking one ``--seed``."""
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL, help="model name (mechreason models)")
    ap.add_argument("--out", required=True, help="output directory (report.md, results.json)")
    ap.add_argument("--quick", action="store_true", help="a tiny run that checks the plumbing")
    ap.add_argument("--n", type=int, default=n,
                    help="problems per set when --tune / --eval are not given")
    if seeds:
        ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="seeds: each draws its own tune and eval problems and control")
    else:
        ap.add_argument("--seed", type=int, default=0, help="problem, sampling and control seed")
    ap.add_argument("--tune", metavar="[SEED:]START-END",
                    help="problems every setting is chosen on: indices START..END-1 of the "
                         "seed's problem stream (default: 0-N, N = --n)")
    ap.add_argument("--eval", metavar="[SEED:]START-END",
                    help="problems every reported number comes from, disjoint from --tune "
                         "(default: N-2N)")
    ap.add_argument("--no-figure", action="store_true", help="skip the plotly figure")
    ap.add_argument("--difficulty", type=int, choices=range(1, 6), metavar="1..5",
                    help="arithmetic steps per problem (default: cycle 1..5)")
    return ap


def start(args: argparse.Namespace) -> tuple[Any, Path]:
    """Configure logging, create ``--out`` and load ``--model``."""
    from mechreason.errors import MechReasonError
    from mechreason.model.loading import load_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    _STARTED[0] = time.monotonic()
    if args.n < 2:
        raise MechReasonError(f"--n must be >= 2, got {args.n}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return load_model(args.model, device="cpu"), out


def seed_of(args: argparse.Namespace) -> int:
    """``--seed``, or the first of ``--seeds``."""
    return int(args.seed) if hasattr(args, "seed") else int(args.seeds[0])


def steps_text(args: argparse.Namespace) -> str:
    """The arithmetic problems' size in words, for the reports."""
    d = getattr(args, "difficulty", None)
    return "1 to 5 steps, cycling" if d is None else f"{d} step{'s' if d > 1 else ''} each"


def is_real(args: argparse.Namespace) -> bool:
    """Whether a run can be reported as a result (not quick, not the random model)."""
    return not args.quick and args.model != "tiny-random"


@dataclasses.dataclass(frozen=True)
class ProblemRange:
    """Problems ``start .. stop-1`` of one seed's procedural problem stream (the stream is
    a sequence: ``make_problems(n=stop)[start:]``, so two ranges of one seed that do not
    overlap hold different problems)."""

    seed: int | None
    """None: the run's seed."""
    start: int
    stop: int

    @classmethod
    def parse(cls, text: str, flag: str) -> ProblemRange:
        from mechreason.errors import MechReasonError

        m = re.fullmatch(r"\s*(?:(\d+)\s*:)?\s*(\d+)\s*-\s*(\d+)\s*", text)
        if not m or int(m.group(2)) >= int(m.group(3)):
            raise MechReasonError(f"{flag} {text!r}: write [SEED:]START-END with START < END "
                                  "(e.g. 0-30 or 1:30-60)")
        return cls(int(m.group(1)) if m.group(1) else None, int(m.group(2)), int(m.group(3)))

    def __str__(self) -> str:
        return (f"{self.seed}:" if self.seed is not None else "") + f"{self.start}-{self.stop}"


class Split(NamedTuple):
    """Disjoint tune and eval problems: settings are chosen on ``tune`` only, and every
    reported number comes from ``eval``, problems never seen while choosing."""

    tune: list[Any]
    eval: list[Any]
    tune_spec: str
    eval_spec: str

    def describe(self) -> dict[str, Any]:
        return {"tune": self.tune_spec, "eval": self.eval_spec, "n_tune": len(self.tune),
                "n_eval": len(self.eval), "tune_ids": [p.id for p in self.tune],
                "eval_ids": [p.id for p in self.eval], "disjoint": True}


def split(args: argparse.Namespace, seed: int | None = None) -> Split:
    """The run's tune and eval problems (``--tune`` / ``--eval``, defaults ``0-N`` and
    ``N-2N``), checked disjoint by problem id and by question text. Under ``--quick`` each
    set keeps at most its first ``--n`` problems."""
    from mechreason.errors import MechReasonError

    seed = seed_of(args) if seed is None else seed
    n = args.n
    ranges = [ProblemRange.parse(args.tune or f"0-{n}", "--tune"),
              ProblemRange.parse(args.eval or f"{n}-{2 * n}", "--eval")]
    ranges = [dataclasses.replace(r, seed=seed if r.seed is None else r.seed) for r in ranges]
    if args.quick:  # the plumbing check: at most --n problems each
        ranges = [dataclasses.replace(r, stop=min(r.stop, r.start + n)) for r in ranges]
    tune, ev = (_range_problems(args, r) for r in ranges)
    shared = ({p.id for p in tune} & {p.id for p in ev}) | \
        {p.id for p in ev if p.question in {q.question for q in tune}}
    if shared:
        raise MechReasonError(f"--tune {ranges[0]} and --eval {ranges[1]} share "
                              f"{len(shared)} problem(s) (e.g. {sorted(shared)[0]}); give "
                              "ranges that do not overlap")
    return Split(tune, ev, str(ranges[0]), str(ranges[1]))


def _range_problems(args: argparse.Namespace, r: ProblemRange) -> list[Any]:
    from mechreason.traces.tasks import make_problems

    return make_problems("arithmetic", r.stop, seed=int(r.seed or 0),
                         difficulty=getattr(args, "difficulty", None))[r.start:]


SCRIPTED = (
    "First, I add 5 and 3 to get 8. Wait, let me check that again. Maybe I misread the "
    "question. No, 5 + 3 = 8 is right. So the answer is 8.",
    "We need the total. Let me think about the plan first. 4 x 6 = 24 pencils. Hmm, is "
    "that right? Then 24 - 5 = 19 are left. Therefore, the answer is 19.",
    "The problem says Tom has 12 apples. Alternatively, we can count them in pairs. "
    "12 + 7 = 19. Let me verify: 19 - 7 = 12. The answer is 19.",
)
"""Canned reasoning texts that stand in for generation on ``tiny-random``, whose random
weights emit no sentences, so quick runs still exercise sentence labels and spans."""


def scripted_generate(model: Any, prompt_ids: Sequence[Sequence[int]], cfg: Any, *,
                      seeds: Sequence[int] | None = None, progress: bool = False) -> Any:
    """A ``generate_fn`` for :func:`mechreason.traces.run.run_traces` yielding SCRIPTED texts."""
    from mechreason.model.generation import Generation
    from mechreason.traces.sentences import decode_offsets

    for i in range(len(prompt_ids)):
        ids = model.encode(SCRIPTED[i % len(SCRIPTED)], special=False)
        yield i, Generation(ids, decode_offsets(model.tokenizer, ids)[0], "eos")


def traces(model: Any, probs: Sequence[Any], path: Path, *, style: str,
           max_new_tokens: int, batch_size: int = 8, scripted: bool = False
           ) -> list[dict[str, Any]]:
    """Greedy traces of ``probs`` in ``style`` (resumes from ``path``); ``scripted``
    replaces generation by :data:`SCRIPTED` texts (for ``tiny-random`` only)."""
    from mechreason.model.generation import SamplingConfig, iter_generate
    from mechreason.traces.run import run_traces

    cfg = SamplingConfig(max_new_tokens=max_new_tokens, batch_size=batch_size)
    return run_traces(model, probs, path, style=style, sampling=cfg,
                      generate_fn=scripted_generate if scripted else iter_generate)


def capture_traces(model: Any, records_path: Path, out_dir: Path, hooks: Sequence[str], *,
                   positions: str = "all") -> Any:
    """Residual activations of trace records (token rows), as an ActivationStore."""
    from mechreason.activations import CaptureConfig, capture

    cfg = CaptureConfig(hooks=tuple(hooks), positions=positions, batch_size=4)
    return capture(model, records_path, cfg, out_dir, progress=False)


def write_records(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write trace records (possibly with added fields) as JSONL."""
    from mechreason.traces.run import write_traces

    write_traces(path, records)
    return path


def existing_sae(args: argparse.Namespace, model: Any) -> tuple[Any, str]:
    """``--sae DIR``, else a shipped SAE under sae_checkpoints/ trained on this model;
    ``(None, why)`` when there is neither."""
    from mechreason.report.demo_stages import shipped_sae
    from mechreason.sae.io import load_sae

    if getattr(args, "sae", None):
        return load_sae(args.sae, model=model), f"--sae {args.sae}"
    found, why = shipped_sae(model, REPO / "sae_checkpoints")
    if found is not None:
        return load_sae(found, model=model), f"shipped SAE {found.name}"
    return None, why


def train_small_sae(args: argparse.Namespace, model: Any, store: Any, hook: str, out: Path,
                    *, rows: Sequence[int] | None = None) -> tuple[Any, str]:
    """A small top-k SAE trained here on ``store``'s ``hook`` rows (saved to out/sae)."""
    from mechreason.sae.io import save_sae
    from mechreason.sae.train import TrainConfig, store_source, train_sae

    n = len(rows) if rows is not None else len(store.rows)
    cfg = TrainConfig(arch="topk", expansion=4, k=8, batch_size=min(256, n), epochs=20,
                      warmup_steps=5, init_rows=min(n, 4096), checkpoint_every=10**9,
                      dead_tokens=max(n, 1), seed=seed_of(args))
    src = store_source(store, hook, cfg.batch_size, seed=seed_of(args),
                       rows=list(rows) if rows is not None else None)
    sae, _ = train_sae(src, cfg, out / "sae_train", hook=hook, model_name=model.name,
                       progress=False)
    save_sae(sae, out / "sae")
    return sae, (f"no shipped SAE for {model.name}: a top-k SAE (k=8, {sae.cfg.d_sae} latents) "
                 f"trained here on {n} token rows of {hook}")


# ---------------------------------------------------------------- numbers


def proportion(k: int, n: int) -> dict[str, float]:
    """A proportion with its Wilson 95% interval."""
    from mechreason.stats import wilson

    lo, hi = wilson(k, n)
    return {"value": k / n if n else math.nan, "lo": lo, "hi": hi, "k": k, "n": n}


def mean(xs: Sequence[float]) -> dict[str, float]:
    """A mean with its Student-t 95% interval (valid at small n)."""
    from mechreason.stats import mean_ci

    m, lo, hi = mean_ci([float(x) for x in xs])
    return {"value": m, "lo": lo, "hi": hi, "n": len(xs)}


def compare(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two independent proportions (``proportion`` dicts) side by side: the difference
    with its 95% interval by Newcombe's hybrid score method (from the two Wilson
    intervals, valid at small n), and Fisher's exact two-sided p."""
    from mechreason.stats import fisher_exact

    d = a["value"] - b["value"]
    lo = d - math.sqrt((a["value"] - a["lo"]) ** 2 + (b["hi"] - b["value"]) ** 2)
    hi = d + math.sqrt((a["hi"] - a["value"]) ** 2 + (b["value"] - b["lo"]) ** 2)
    return {"value": d, "lo": lo, "hi": hi, "a": f"{a['k']}/{a['n']}", "b": f"{b['k']}/{b['n']}",
            "fisher_p": fisher_exact(int(a["k"]), int(a["n"]), int(b["k"]), int(b["n"]))}


def bootstrap(xs: Sequence[Any], stat: Callable[[Sequence[Any]], float], *, n_boot: int = 1000,
              seed: int = 0) -> dict[str, float]:
    """``stat`` with a percentile bootstrap 95% interval over resampled ``xs``."""
    rng = random.Random(seed)
    value = stat(xs)
    boots = sorted(stat([xs[rng.randrange(len(xs))] for _ in xs]) for _ in range(n_boot))
    boots = [b for b in boots if math.isfinite(b)]
    if not boots:
        return {"value": value, "lo": math.nan, "hi": math.nan, "n": len(xs)}
    return {"value": value, "lo": boots[int(0.025 * (len(boots) - 1))],
            "hi": boots[int(0.975 * (len(boots) - 1))], "n": len(xs)}


def fmt(x: Any) -> str:
    """A number, or a ``{"value", "lo", "hi"}`` dict, as short text."""
    if isinstance(x, Mapping) and "value" in x:
        core = fmt(x["value"])
        if x.get("lo") is not None and math.isfinite(x["lo"]) and x["lo"] != x["hi"]:
            core += f" [{fmt(x['lo'])}, {fmt(x['hi'])}]"
        return core + (f" (n={x['n']})" if "n" in x else "")
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.3g}"
    return str(x)


def finite_numbers(obj: Any, path: str = "") -> list[str]:
    """Paths of the non-finite numbers in a JSON-like object (``[]``: all finite)."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return []
    if isinstance(obj, (int, float)):
        return [] if math.isfinite(obj) else [path or "."]
    if isinstance(obj, Mapping):
        return [p for k, v in obj.items() for p in finite_numbers(v, f"{path}.{k}")]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in finite_numbers(v, f"{path}[{i}]")]
    return []


# ---------------------------------------------------------------- report


def command(script: str, args: argparse.Namespace) -> str:
    """The command line that reproduces this run: every option, defaults included."""
    parts = [f"python analyses/{script}"]
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            parts += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            parts += [flag, *map(str, value)]
        elif value is not None:
            parts += [flag, str(value)]
    return " ".join(parts)


def write_report(out: Path, model: Any, args: argparse.Namespace, *, script: str, title: str,
                 citation: str, rows: Sequence[tuple[str, str, Any]], why: Sequence[str],
                 body: Sequence[str], numbers: Mapping[str, Any],
                 paper: Mapping[str, Any], split: Split | Mapping[str, Split],
                 chosen: Mapping[str, Any]) -> None:
    """Write ``report.md`` (paper vs ours, why they differ, details), ``results.json``
    (``numbers``: the script's measurements; ``paper``: the paper's) and ``meta.json``.

    rows: ``(quantity, paper's value as text, ours)``; ours may be an interval dict.
    split: the tune / eval problems (per seed when the script repeats over seeds).
    chosen: every setting the script chose on the tune problems, with the tune numbers
    it chose by (empty when it chooses nothing); the report, results.json and meta.json
    state both.
    """
    from mechreason.artifacts import write_json, write_meta

    real = is_real(args)
    cmd = command(script, args)
    lines = [f"# {title}", "", citation, ""]
    if not real:
        lines += ["> **Plumbing check, not a result**: this run used "
                  f"{'--quick' if args.quick else ''} {args.model}; numbers below only show "
                  "the script works.", ""]
    wall = time.monotonic() - _STARTED[0]
    splits = {"": split} if isinstance(split, Split) else dict(split)
    seeds = getattr(args, "seeds", None) or [args.seed]
    lines += [f"Model `{args.model}`, procedural arithmetic ({steps_text(args)}), "
              f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, "
              f"wall time {wall:.0f} s (model load included). Command:", "", f"    {cmd}", "",
              *_split_lines(splits, chosen), "",
              "| quantity | paper | ours (95% CI) |", "|---|---|---|"]
    lines += [f"| {q} | {p} | {fmt(o)} |" for q, p, o in rows]
    lines += ["", "## Why they differ", "", *[f"- {w}" for w in why], "", "## Details", "",
              *body, ""]
    (out / "report.md").write_text("\n".join(lines))
    split_json = {k or "all": v.describe() for k, v in splits.items()}
    write_json(out / "results.json", {"script": script, "model": args.model, "real": real,
                                      "quick": bool(args.quick), "seeds": seeds,
                                      "split": split_json, "chosen_on_tune": dict(chosen),
                                      "command": cmd, "wall_s": round(wall, 1), "paper": dict(paper),
                                      "ours": dict(numbers)})
    write_meta(out, model, stage=f"analyses/{script}", quick=bool(args.quick),
               split=split_json, chosen_on_tune=dict(chosen))
    log.info("wrote %s", out / "report.md")


def _split_lines(splits: Mapping[str, Split], chosen: Mapping[str, Any]) -> list[str]:
    """The report's statement of the pre-registered split."""
    out = []
    for key, sp in splits.items():
        out.append(f"Problems{f' (seed {key})' if key else ''}: tune `{sp.tune_spec}` "
                   f"(n = {len(sp.tune)}), eval `{sp.eval_spec}` (n = {len(sp.eval)}), disjoint "
                   "(checked by problem id and question text).")
    if chosen:
        out += ["", "Chosen on the tune problems only (eval numbers below come from problems "
                "never seen while choosing): " + "; ".join(f"{k}: {fmt(v)}"
                                                       for k, v in chosen.items()) + "."]
    else:
        out += ["", "This script chooses no setting from data: the tune problems are unused "
                "and every number comes from the eval problems."]
    return out


def save_figure(args: argparse.Namespace, fig_fn: Callable[[], Any], out: Path, stem: str
                ) -> list[str]:
    """Build and save a figure (HTML, PNG where kaleido and Chromium exist)."""
    if args.no_figure:
        return []
    from mechreason.report.plots import save_figure as save

    return [p.name for p in save(fig_fn(), out / stem)]
