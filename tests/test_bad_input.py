"""The bad-input table (issue 13): every subcommand, every class of bad input, one row
each. Each row runs the CLI in-process and asserts exit code 2, no traceback, and one
stderr line that holds the expected fragment (the bad value, and the valid choices where
there are any). Fixtures are built once per session from the tiny random model.

Classes: parse-time numbers (non-finite, out of range, not a number), unknown choices,
devices, models (unknown, a file, a directory that is not a model), input files
(missing, a directory, binary / non-UTF-8, malformed JSON, empty, wrong kind), corrupt
artifacts (truncated safetensors, corrupted JSON / checkpoint, NaN weights, degenerate
directions), outputs (an existing file where a directory is needed and the reverse, a
read-only file system, a full disk), fingerprints (resuming with other inputs or
settings), traces of another model, token ids outside the vocabulary, inputs longer than
the context, method preconditions, and a second writer (a held lock).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from mechreason.cli import main

HOOK = "blocks.1.hook_resid_post"
SHORT = "I add two and three. So the answer is five."
LONG_TEXT = "a" * 2100  # the tiny model's context is 2048 byte tokens
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present here")


def _run(argv: list[str]) -> int:
    return main(argv)


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def _trace_records(model, texts: list[str]) -> list[dict]:
    from mechreason.anchors.trace import trace_from_ids

    prompt = model.encode(model.format_prompt("What is 2+3?"))
    out = []
    for k, text in enumerate(texts):
        tr = trace_from_ids(model, prompt, model.encode(text, special=False), id=f"t{k}", gold="5")
        sents = [{"idx": i, "text": tr.texts[i], "char_start": tr.char_starts[i],
                  "tok_start": a, "tok_end": b, "labels": []} for i, (a, b) in enumerate(tr.spans)]
        out.append({"id": tr.id, "model": model.name, "weights_hash": model.weights_hash,
                    "prompt_ids": list(tr.ids[:tr.prompt_len]),
                    "generated_ids": list(tr.ids[tr.prompt_len:]),
                    "generated_text": tr.generated_text, "gold": "5", "answer": "5",
                    "correct": True, "sentences": sents})
    return out


def _jsonl(path: Path, recs: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(r) + "\n" for r in recs))


def _direction(root: Path, tensor: torch.Tensor, side: str | None = None) -> Path:
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    save_file({HOOK: tensor.contiguous()}, str(root / "direction.safetensors"))
    _write(root / "direction.json",
           side if side is not None else json.dumps({"hooks": [HOOK], "best_hook": HOOK}))
    return root


def _sae(root: Path, nan: bool = False) -> Path:
    from mechreason.sae.io import save_sae
    from mechreason.sae.model import SAEConfig, SparseAutoencoder

    sae = SparseAutoencoder(SAEConfig(d_in=64, d_sae=32, arch="topk", k=4, hook=HOOK,
                                      model="tiny-random"), seed=0)
    if nan:
        with torch.no_grad():
            sae.W_dec[0, 0] = float("nan")
    save_sae(sae, root)
    return root


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _mount_tmpfs(where: Path, opts: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                       capture_output=True)
    return r.returncode == 0


_HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fds = []
    for p in sys.argv[1:]:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\\n".encode())
        fds.append(fd)
    print("ready", flush=True)
    time.sleep(600)
""")


@pytest.fixture(scope="session")
def fx(tmp_path_factory, tiny):
    """Every input of the table, made from the tiny model in a few seconds."""
    from mechreason.activations import CaptureConfig, capture

    d = tmp_path_factory.mktemp("bad")
    p: dict[str, str] = {"missing": str(d / "no-such-file.jsonl"), "dir": str(d / "a-dir")}
    (d / "a-dir").mkdir()
    p["file"] = str(_write(d / "a-file.txt", "hello\n"))
    p["binary"] = str(_write(d / "binary.txt", bytes(range(256)) * 4))
    p["binary_jsonl"] = str(_write(d / "binary.jsonl", b"\xff\xfe\x00garbage\x80\n"))
    p["bad_json"] = str(_write(d / "bad.jsonl", '{"text": "a"}\n{not json\n{"text": "b"}\n'))
    p["no_text"] = str(_write(d / "no_text.jsonl", '{"answer": 3}\n'))
    p["empty"] = str(_write(d / "empty.txt", "\n"))
    p["empty_jsonl"] = str(_write(d / "empty.jsonl", ""))
    p["csv"] = str(_write(d / "texts.csv", "a,b\n"))
    p["texts"] = str(_write(d / "texts.txt", "two plus three\nfour times five\nsix\n"))
    p["long"] = str(_write(d / "long.txt", LONG_TEXT + "\n"))
    notmodel = d / "not-a-model"
    _write(notmodel / "readme.md", "hello")
    p["notmodel"] = str(notmodel)
    _write(d / "cfg-only" / "config.json", json.dumps({"model_type": "llama"}))
    p["cfg_only"] = str(d / "cfg-only")
    # traces: a real traces file, a short one, and foreign / out-of-vocabulary copies
    recs = _trace_records(tiny, [SHORT])
    p["short_traces"] = str(_jsonl(d / "short.jsonl", recs))
    other = [{**r, "model": "smollm2-135m-instruct", "weights_hash": "0123abcd" * 8} for r in recs]
    p["foreign_traces"] = str(_jsonl(d / "foreign.jsonl", other))
    big = [{**r, "generated_ids": [*r["generated_ids"], 99_999]} for r in recs]
    p["bigid_traces"] = str(_jsonl(d / "bigid.jsonl", big))
    gen = d / "gen.jsonl"
    assert main(["traces", "--model", "tiny-random", "--device", "cpu", "--task", "arithmetic",
                 "--n", "2", "--max-new-tokens", "6", "--out", str(gen)]) == 0
    p["gen_traces"] = str(gen)
    gen_recs = [json.loads(x) for x in gen.read_text().splitlines()]
    p["gen_foreign"] = str(_jsonl(d / "gen_foreign.jsonl",
                                  [{**r, "weights_hash": "f" * 64} for r in gen_recs]))
    p["gen_other_q"] = str(_jsonl(d / "gen_other_q.jsonl",
                                  [{**r, "question": "What is 1+1?"} for r in gen_recs]))
    # a capture store and broken copies
    store = d / "store"
    capture(tiny, p["texts"], CaptureConfig(hooks=(HOOK,), dtype="float32"), store, progress=False)
    p["store"] = str(store)
    bad_cfg = d / "store_bad_cfg"
    shutil.copytree(store, bad_cfg)
    _write(bad_cfg / "cfg.json", '{"capture": {"hooks": [')
    p["store_bad_cfg"] = str(bad_cfg)
    trunc = d / "store_trunc"
    shutil.copytree(store, trunc)
    _truncate(trunc / "shard-00000.safetensors")
    p["store_trunc"] = str(trunc)
    # SAEs: good, NaN, truncated, corrupt config; a finished SAE trained with k=4
    p["sae"] = str(_sae(d / "sae"))
    p["sae_nan"] = str(_sae(d / "sae_nan", nan=True))
    _truncate(_sae(d / "sae_trunc") / "sae_weights.safetensors")
    p["sae_trunc"] = str(d / "sae_trunc")
    _write(_sae(d / "sae_badcfg") / "cfg.json", "{oops")
    p["sae_badcfg"] = str(d / "sae_badcfg")
    p["sae_done"] = str(d / "sae_done")
    assert main(["sae", "train", "--acts", str(store), "--hook", HOOK, "--k", "4",
                 "--expansion", "2", "--batch-size", "8", "--holdout", "0", "--out",
                 p["sae_done"], "--no-progress"]) == 0
    _write(d / "sae_badstate" / "train_state.pt", b"PK\x03\x04 not a checkpoint")
    p["sae_badstate"] = str(d / "sae_badstate")
    # directions: good, truncated, zero, a matrix, NaN, corrupt JSON
    g = torch.Generator().manual_seed(0)
    p["vec"] = str(_direction(d / "vec", torch.randn(64, generator=g)))
    _truncate(_direction(d / "vec_trunc", torch.randn(64, generator=g)) / "direction.safetensors")
    p["vec_trunc"] = str(d / "vec_trunc")
    p["vec_zero"] = str(_direction(d / "vec_zero", torch.zeros(64)))
    p["vec_matrix"] = str(_direction(d / "vec_matrix", torch.randn(8, 8, generator=g)))
    p["vec_nan"] = str(_direction(d / "vec_nan", torch.full((64,), float("nan"))))
    p["vec_badjson"] = str(_direction(d / "vec_badjson", torch.randn(64, generator=g), "{]"))
    # a report run directory with a malformed direction.json
    _write(d / "run_bad" / "directions" / "direction.json", json.dumps({"hooks": 5, "metrics": "x"}))
    p["run_bad"] = str(d / "run_bad")
    # an anchors output made with --receivers-top-k 20 (suppression only: quick)
    p["anchors_done"] = str(d / "anchors_done")
    assert main(["anchors", "--model", "tiny-random", "--device", "cpu", "--traces",
                 p["short_traces"], "--methods", "suppression", "--out", p["anchors_done"]]) == 0
    # outputs: a held lock (another process), a full disk, a read-only file system
    locked = d / "locked"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(locked / ".lock"),
                               str(d / "locked.jsonl.lock")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    p["locked"], p["locked_file"], p["holder_pid"] = str(locked), str(d / "locked.jsonl"), str(holder.pid)
    mounts = []
    if _mount_tmpfs(d / "full", "size=1m"):
        mounts.append(d / "full")
        p["full"] = str(d / "full")
    if _mount_tmpfs(d / "ro", "ro,size=1m"):
        mounts.append(d / "ro")
        p["ro"] = str(d / "ro")
    yield p
    holder.kill()
    holder.wait()
    for m in mounts:
        subprocess.run(["umount", str(m)], check=False)


def C(*argv: str, msg: str, marks=()):
    return pytest.param(list(argv), msg, marks=marks, id=" ".join(argv)[:90])


T = "tiny-random"
CAP = ("capture", "--model", T, "--device", "cpu", "--hooks", HOOK)
TRC = ("traces", "--model", T, "--device", "cpu", "--task", "arithmetic", "--n", "2",
       "--max-new-tokens", "6")
ANC = ("anchors", "--model", T, "--device", "cpu")
SAE = ("sae", "train", "--hook", HOOK, "--no-progress")
STEER = ("steer", "--model", T, "--n", "2", "--max-new-tokens", "4", "--no-progress")
DIRS = ("directions", "--contrast", "style=cot:direct")
FEAT = ("features", "--score", "contrast")
BEH = ("behaviours", "--n-clusters", "4")
DEMO = ("demo", "--quick", "--no-progress")
OUT = "{tmp}/out"

CASES = [
    # ---- capture
    C(*CAP, "--input", "{texts}", "--max-length", "0", "--out", OUT, msg="--max-length: '0' is out of range; valid: >= 1"),
    C(*CAP, "--input", "{texts}", "--max-length", "-4", "--out", OUT, msg="'-4' is out of range"),
    C(*CAP, "--input", "{texts}", "--batch-size", "0", "--out", OUT, msg="--batch-size: '0' is out of range"),
    C(*CAP, "--input", "{texts}", "--batch-size", "eight", "--out", OUT, msg="'eight' is not an integer"),
    C(*CAP, "--input", "{texts}", "--shard-rows", "-5", "--out", OUT, msg="--shard-rows: '-5'"),
    C(*CAP, "--input", "{texts}", "--dtype", "float8", "--out", OUT, msg="invalid choice: 'float8'"),
    C(*CAP, "--input", "{texts}", "--aggregate", "median", "--out", OUT, msg="invalid choice: 'median'"),
    C(*CAP, "--input", "{texts}", "--device", "bogus", "--out", OUT, msg="unknown device 'bogus'; valid: 'cpu', 'cuda'"),
    C(*CAP, "--input", "{texts}", "--device", "cuda", "--out", OUT, msg="device 'cuda': no CUDA GPU", marks=NO_CUDA),
    C(*CAP, "--input", "{texts}", "--device", "cuda:99", "--out", OUT, msg="'cuda:99'"),
    C(*CAP, "--input", "{texts}", "--model", "bogus", "--out", OUT, msg="unknown model 'bogus'"),
    C(*CAP, "--input", "{texts}", "--model", "{notmodel}", "--out", OUT, msg="is not a model: it has no config.json"),
    C(*CAP, "--input", "{texts}", "--model", "{cfg_only}", "--out", OUT, msg="is not a model: no weight files"),
    C(*CAP, "--input", "{texts}", "--model", "{file}", "--out", OUT, msg="is a file; give a model name"),
    C(*CAP, "--input", "{missing}", "--out", OUT, msg="no-such-file.jsonl' does not exist"),
    C(*CAP, "--input", "{binary}", "--out", OUT, msg="binary.txt' is not UTF-8 text"),
    C(*CAP, "--input", "{binary_jsonl}", "--out", OUT, msg="is not UTF-8 text"),
    C(*CAP, "--input", "{dir}", "--out", OUT, msg="a-dir' is a directory"),
    C(*CAP, "--input", "{csv}", "--out", OUT, msg="should be a .txt or .jsonl file"),
    C(*CAP, "--input", "{bad_json}", "--out", OUT, msg="bad.jsonl:2 is not valid JSON"),
    C(*CAP, "--input", "{no_text}", "--out", OUT, msg="a record needs 'text'"),
    C(*CAP, "--input", "{empty}", "--out", OUT, msg="capture input is empty"),
    C(*CAP, "--input", "{foreign_traces}", "--out", OUT, msg="was made by model 'smollm2-135m-instruct'"),
    C(*CAP, "--input", "{bigid_traces}", "--out", OUT, msg="token id 99999 is outside this model's vocabulary"),
    C(*CAP, "--input", "{long}", "--out", OUT, msg="has 2100 tokens, more than tiny-random's context of 2048"),
    C(*CAP, "--input", "{texts}", "--out", "{file}", msg="a-file.txt' is an existing file; it needs a directory"),
    C(*CAP, "--input", "{texts}", "--out", "{file}/sub", msg="a-file.txt' is a file, not a directory"),
    C(*CAP, "--input", "{long}", "--out", "{store}", "--dtype", "float32", "--max-length", "10", msg="capture.max_length was None, now 10"),
    C(*CAP, "--input", "{short_traces}", "--out", "{store}", "--dtype", "float32", msg="inputs_sha256 was"),
    C(*CAP, "--input", "{texts}", "--out", "{store}", msg="capture.dtype was 'float32', now 'float16'"),
    C(*CAP, "--input", "{texts}", "--out", "{store}", "--dtype", "float32", "--positions", "last", msg="capture.positions was 'all', now 'last'"),
    C(*CAP, "--input", "{texts}", "--hooks", "blocks.99.hook_resid_post", "--out", OUT, msg="layer 99 in hook 'blocks.99.hook_resid_post' is out of range"),
    C(*CAP, "--input", "{texts}", "--hooks", "blocks.1.hook_resid_pots", "--out", OUT, msg="unknown hook name 'blocks.1.hook_resid_pots'"),
    C(*CAP, "--input", "{texts}", "--positions", "middle", "--out", OUT, msg="unknown positions 'middle'"),
    C(*CAP, "--input", "{texts}", "--positions", "generated", "--out", OUT, msg="positions 'generated' need trace records"),
    C(*CAP, "--input", "{texts}", "--positions", "0,999", "--out", OUT, msg="positions [999] out of range"),
    C(*CAP, "--input", "{texts}", "--out", "{locked}", msg="another mechreason job (pid {holder_pid})"),
    C(*CAP, "--input", "{texts}", "--out", "{full}/store", msg="MiB free on its disk"),
    C(*CAP, "--input", "{texts}", "--out", "{ro}/store", msg="/ro/store' is not writable"),
    # ---- traces
    C(*TRC, "--out", OUT + ".jsonl", "--n", "0", msg="--n: '0' is out of range; valid: >= 1"),
    C(*TRC, "--out", OUT + ".jsonl", "--n", "-3", msg="'-3' is out of range"),
    C(*TRC, "--out", OUT + ".jsonl", "--temperature", "nan", msg="--temperature: 'nan' is not a finite number"),
    C(*TRC, "--out", OUT + ".jsonl", "--temperature", "inf", msg="'inf' is not a finite number"),
    C(*TRC, "--out", OUT + ".jsonl", "--temperature", "-1", msg="--temperature: '-1' is out of range; valid: [0, 100]"),
    C(*TRC, "--out", OUT + ".jsonl", "--top-p", "0", msg="--top-p: '0' is out of range; valid: (0, 1]"),
    C(*TRC, "--out", OUT + ".jsonl", "--top-p", "1.5", msg="'1.5' is out of range"),
    C(*TRC, "--out", OUT + ".jsonl", "--max-new-tokens", "0", msg="--max-new-tokens: '0'"),
    C(*TRC, "--out", OUT + ".jsonl", "--batch-size", "0", msg="--batch-size: '0'"),
    C(*TRC, "--out", OUT + ".jsonl", "--seed", "-1", msg="--seed: '-1' is out of range"),
    C(*TRC, "--out", OUT + ".jsonl", "--difficulty", "9", msg="--difficulty: '9' is out of range; valid: [1, 5]"),
    C(*TRC, "--out", OUT + ".jsonl", "--labeller", "gpt", msg="invalid choice: 'gpt'"),
    C(*TRC, "--out", OUT + ".jsonl", "--dtype", "int8", msg="invalid choice: 'int8'"),
    C(*TRC, "--out", OUT + ".jsonl", "--style", "telepathic", msg="'telepathic'"),
    C(*TRC, "--out", OUT + ".jsonl", "--model", "bogus", msg="unknown model 'bogus'"),
    C(*TRC, "--out", OUT + ".jsonl", "--model", "{notmodel}", msg="is not a model"),
    C(*TRC, "--out", OUT + ".jsonl", "--device", "bogus", msg="unknown device 'bogus'"),
    C(*TRC, "--out", OUT + ".jsonl", "--device", "cuda:99", msg="'cuda:99'"),
    C("traces", "--task", "gsm8k", "--data-file", "{binary_jsonl}", "--out", OUT + ".jsonl", msg="binary.jsonl' is not UTF-8 text"),
    C("traces", "--task", "gsm8k", "--data-file", "{bad_json}", "--out", OUT + ".jsonl", msg="bad.jsonl:2: not valid JSON"),
    C("traces", "--task", "gsm8k", "--data-file", "{missing}", "--out", OUT + ".jsonl", msg="no-such-file.jsonl' does not exist"),
    C("traces", "--task", "gsm8k", "--data-file", "{empty_jsonl}", "--out", OUT + ".jsonl", msg="holds no records"),
    C("traces", "--task", "chess", "--out", OUT + ".jsonl", msg="invalid choice: 'chess'"),
    C(*TRC, "--out", "{dir}", msg="a-dir' is a directory; it needs a file name"),
    C(*TRC, "--out", "{file}/t.jsonl", msg="is a file, not a directory"),
    C(*TRC, "--out", "{gen_foreign}", msg="with other weights"),
    C(*TRC, "--out", "{gen_other_q}", msg="for another problem"),
    C(*TRC, "--out", "{gen_traces}", "--max-new-tokens", "7", msg="max_new_tokens 6 (now 7)"),
    C(*TRC, "--out", "{binary_jsonl}", msg="binary.jsonl' is not UTF-8 text"),
    C(*TRC, "--out", "{locked_file}", msg="another mechreason job (pid {holder_pid})"),
    C(*TRC, "--out", "{full}/t.jsonl", msg="MiB free on its disk"),
    C(*TRC, "--out", "{ro}/t.jsonl", msg="is not writable"),
    # ---- anchors
    C(*ANC, "--traces", "{missing}", "--out", OUT, msg="no-such-file.jsonl' does not exist"),
    C(*ANC, "--traces", "{binary_jsonl}", "--out", OUT, msg="is not UTF-8 text"),
    C(*ANC, "--traces", "{bad_json}", "--out", OUT, msg="bad.jsonl:1: not a trace record"),
    C(*ANC, "--traces", "{empty_jsonl}", "--out", OUT, msg="holds no traces"),
    C(*ANC, "--traces", "{foreign_traces}", "--out", OUT, msg="was made by model 'smollm2-135m-instruct'"),
    C(*ANC, "--traces", "{bigid_traces}", "--out", OUT, msg="token id 99999 is outside"),
    C(*ANC, "--traces", "{short_traces}", "--methods", "resample,telepathy", "--out", OUT, msg="unknown anchors method 'telepathy'"),
    C(*ANC, "--traces", "{short_traces}", "--methods", ",", "--out", OUT, msg="choose at least one method"),
    C(*ANC, "--traces", "{short_traces}", "--methods", "receivers", "--out", OUT, msg="method 'receivers' needs a trace of 6+ sentences"),
    C(*ANC, "--traces", "{short_traces}", "--index", "7", "--out", OUT, msg="trace index 7 out of range"),
    C(*ANC, "--traces", "{short_traces}", "--index", "-1", "--out", OUT, msg="--index: '-1' is out of range"),
    C(*ANC, "--traces", "{short_traces}", "--rollouts", "0", "--out", OUT, msg="--rollouts: '0' is out of range"),
    C(*ANC, "--traces", "{short_traces}", "--receivers-top-k", "0", "--out", OUT, msg="--receivers-top-k: '0'"),
    C(*ANC, "--traces", "{short_traces}", "--batch-size", "0", "--out", OUT, msg="--batch-size: '0'"),
    C(*ANC, "--traces", "{short_traces}", "--max-new-tokens", "nan", msg="'nan' is not an integer"),
    C(*ANC, "--traces", "{short_traces}", "--receiver-traces", "0", "--out", OUT, msg="--receiver-traces: '0'"),
    C(*ANC, "--traces", "{short_traces}", "--model", "bogus", "--out", OUT, msg="unknown model 'bogus'"),
    C(*ANC, "--traces", "{short_traces}", "--device", "bogus", "--out", OUT, msg="unknown device 'bogus'"),
    C(*ANC, "--traces", "{short_traces}", "--out", "{file}", msg="is an existing file"),
    C(*ANC, "--traces", "{short_traces}", "--methods", "suppression", "--receivers-top-k", "5", "--out", "{anchors_done}", msg="receivers.top_k was 20, now 5"),
    C(*ANC, "--traces", "{short_traces}", "--methods", "suppression", "--out", "{locked}", msg="(pid {holder_pid})"),
    C(*ANC, "--traces", "{short_traces}", "--out", "{ro}/a", msg="is not writable"),
    # ---- sae train / eval
    C(*SAE, "--acts", "{store}", "--lr", "nan", "--out", OUT, msg="--lr: 'nan' is not a finite number"),
    C(*SAE, "--acts", "{store}", "--lr", "0", "--out", OUT, msg="--lr: '0' is out of range; valid: > 0"),
    C(*SAE, "--acts", "{store}", "--lr=-1e-3", "--out", OUT, msg="'-1e-3' is out of range"),
    C(*SAE, "--acts", "{store}", "--holdout", "1.5", "--out", OUT, msg="--holdout: '1.5' is out of range; valid: [0, 1)"),
    C(*SAE, "--acts", "{store}", "--holdout", "1", "--out", OUT, msg="'1' is out of range"),
    C(*SAE, "--acts", "{store}", "--holdout", "-0.1", "--out", OUT, msg="'-0.1' is out of range"),
    C(*SAE, "--acts", "{store}", "--holdout", "0.9", "--out", OUT, msg="no training rows: --holdout 0.9"),
    C(*SAE, "--acts", "{store}", "--k", "0", "--out", OUT, msg="--k: '0'"),
    C(*SAE, "--acts", "{store}", "--expansion", "0", "--out", OUT, msg="--expansion: '0'"),
    C(*SAE, "--acts", "{store}", "--epochs", "0", "--out", OUT, msg="--epochs: '0'"),
    C(*SAE, "--acts", "{store}", "--n-tokens", "0", "--out", OUT, msg="--n-tokens: '0'"),
    C(*SAE, "--acts", "{store}", "--checkpoint-every", "0", "--out", OUT, msg="--checkpoint-every: '0'"),
    C(*SAE, "--acts", "{store}", "--l1-coeff", "nan", "--out", OUT, msg="--l1-coeff: 'nan' is not a finite number"),
    C(*SAE, "--acts", "{store}", "--arch", "gated", "--out", OUT, msg="invalid choice: 'gated'"),
    C(*SAE, "--acts", "{store}", "--store-dtype", "int8", "--out", OUT, msg="invalid choice: 'int8'"),
    C(*SAE, "--acts", "{missing}", "--out", OUT, msg="is not a capture directory (no cfg.json)"),
    C(*SAE, "--acts", "{store_bad_cfg}", "--out", OUT, msg="cfg.json' is not valid JSON"),
    C(*SAE, "--acts", "{store_trunc}", "--out", OUT, msg="shard-00000.safetensors' is truncated or corrupted"),
    C("sae", "train", "--acts", "{store}", "--hook", "blocks.3.hook_resid_post", "--out", OUT, msg="'blocks.3.hook_resid_post'"),
    C(*SAE, "--acts", "{store}", "--out", "{file}", msg="is an existing file"),
    C(*SAE, "--acts", "{store}", "--k", "8", "--expansion", "2", "--batch-size", "8", "--holdout", "0", "--out", "{sae_done}", msg="train.k was 4, now 8"),
    C(*SAE, "--acts", "{store}", "--k", "4", "--expansion", "2", "--batch-size", "8", "--holdout", "0.5", "--out", "{sae_done}", msg="holdout was 0.0, now 0.5"),
    C(*SAE, "--acts", "{store}", "--out", "{sae_badstate}", msg="train_state.pt' is truncated or corrupted"),
    C(*SAE, "--acts", "{store}", "--out", "{locked}", msg="(pid {holder_pid})"),
    C(*SAE, "--acts", "{store}", "--out", "{full}/sae", msg="MiB free on its disk"),
    C("sae", "eval", "--sae", "{missing}", "--acts", "{store}", msg="no SAE folder at"),
    C("sae", "eval", "--sae", "{sae_trunc}", "--acts", "{store}", msg="sae_weights.safetensors' is truncated or corrupted"),
    C("sae", "eval", "--sae", "{sae_nan}", "--acts", "{store}", msg="weight W_dec became non-finite"),
    C("sae", "eval", "--sae", "{sae_badcfg}", "--acts", "{store}", msg="cfg.json' is not valid JSON"),
    C("sae", "eval", "--sae", "{sae}", "--acts", "{store}", "--max-items", "0", msg="--max-items: '0'"),
    C("sae", "eval", "--sae", "{sae}", "--acts", "{file}", msg="is not a capture directory"),
    C("sae", "fit", msg="invalid choice: 'fit'"),
    # ---- features
    C(*FEAT, "--sae", "{sae}", "--acts", "{store}", "--top", "0", "--out", OUT, msg="--top: '0' is out of range"),
    C("features", "--score", "vibes", "--sae", "{sae}", "--acts", "{store}", "--out", OUT, msg="invalid choice: 'vibes'"),
    C(*FEAT, "--sae", "{sae_nan}", "--acts", "{store}", "--out", OUT, msg="became non-finite"),
    C(*FEAT, "--sae", "{missing}", "--acts", "{store}", "--out", OUT, msg="no SAE folder"),
    C(*FEAT, "--sae", "{sae}", "--acts", "{dir}", "--out", OUT, msg="is not a capture directory"),
    C(*FEAT, "--sae", "{sae}", "--acts", "{store}", "--out", "{file}", msg="is an existing file"),
    C(*FEAT, "--sae", "{sae}", "--acts", "{store}", "--out", "{locked}", msg="(pid {holder_pid})"),
    # ---- behaviours
    C("behaviours", "--n-clusters", "0", "--acts", "{store}", "--out", OUT, msg="--n-clusters: '0'"),
    C(*BEH, "--k", "0", "--acts", "{store}", "--out", OUT, msg="--k: '0'"),
    C(*BEH, "--method", "dbscan", "--acts", "{store}", "--out", OUT, msg="invalid choice: 'dbscan'"),
    C(*BEH, "--acts", "{missing}", "--out", OUT, msg="is not a capture directory"),
    C(*BEH, "--acts", "{store}", "--hook", "blocks.0.hook_resid_pre", "--out", OUT, msg="unknown hook in this store 'blocks.0.hook_resid_pre'"),
    C(*BEH, "--acts", "{store}", "--out", "{file}", msg="is an existing file"),
    C(*BEH, "--acts", "{store}", "--out", "{locked}", msg="(pid {holder_pid})"),
    # ---- directions
    C(*DIRS, "--acts", "{store}", "--test-frac", "0", "--out", OUT, msg="--test-frac: '0' is out of range; valid: (0, 1)"),
    C(*DIRS, "--acts", "{store}", "--test-frac", "1.5", "--out", OUT, msg="'1.5' is out of range"),
    C(*DIRS, "--acts", "{store}", "--test-frac", "nan", "--out", OUT, msg="'nan' is not a finite number"),
    C(*DIRS, "--acts", "{store}", "--min-problems", "0", "--out", OUT, msg="--min-problems: '0'"),
    C(*DIRS, "--acts", "{missing}", "--out", OUT, msg="is not a capture directory"),
    C(*DIRS, "--acts", "{store}", "--out", "{file}", msg="is an existing file"),
    C(*DIRS, "--acts", "{store}", "--export-gguf", "{dir}", "--out", OUT, msg="--export-gguf"),
    C(*DIRS, "--acts", "{store}", "--export-gguf", "{tmp}/v.gguf", "--export-layers", "x,y", "--out", OUT, msg="GGUF layers 'x,y'"),
    C(*DIRS, "--acts", "{store}", "--method", "vibes", "--out", OUT, msg="'vibes'"),
    C(*DIRS, "--acts", "{store}", "--out", "{locked}", msg="(pid {holder_pid})"),
    # ---- steer
    C(*STEER, "--vector", "{vec}", "--alpha", "nan", "--out", OUT, msg="--alpha: 'nan' is out of range; valid: finite with |alpha| <= 10000"),
    C(*STEER, "--vector", "{vec}", "--alpha", "1e30", "--out", OUT, msg="'1e30' is out of range"),
    C(*STEER, "--vector", "{vec}", "--alpha", "2,1e39", "--out", OUT, msg="'1e39' is out of range"),
    C(*STEER, "--vector", "{vec}", "--alpha=-inf", "--out", OUT, msg="'-inf' is out of range"),
    C(*STEER, "--vector", "{vec}", "--alpha", "big", "--out", OUT, msg="'big' is not a number"),
    C(*STEER, "--vector", "{vec}", "--temperature", "nan", "--out", OUT, msg="--temperature: 'nan' is not a finite number"),
    C(*STEER, "--vector", "{vec}", "--kl-texts", "-1", "--out", OUT, msg="--kl-texts: '-1' is out of range"),
    C(*STEER, "--vector", "{vec}", "--n", "0", "--out", OUT, msg="--n: '0'"),
    C(*STEER, "--vector", "{vec}", "--latent", "-2", "--out", OUT, msg="--latent: '-2'"),
    C(*STEER, "--vector", "{missing}", "--out", OUT, msg="is not a direction directory"),
    C(*STEER, "--vector", "{vec_trunc}", "--out", OUT, msg="direction.safetensors' is truncated or corrupted"),
    C(*STEER, "--vector", "{vec_zero}", "--out", OUT, msg="is all zeros"),
    C(*STEER, "--vector", "{vec_matrix}", "--out", OUT, msg="holds a (8, 8) tensor"),
    C(*STEER, "--vector", "{vec_nan}", "--out", OUT, msg="holds NaN or inf"),
    C(*STEER, "--vector", "{vec_badjson}", "--out", OUT, msg="direction.json' is not valid JSON"),
    C(*STEER, "--sae", "{sae}", "--out", OUT, msg="--sae needs --latent"),
    C(*STEER, "--sae", "{sae_nan}", "--latent", "1", "--out", OUT, msg="became non-finite"),
    C(*STEER, "--vector", "{vec}", "--sae", "{sae}", "--out", OUT, msg="not allowed with argument"),
    C(*STEER, "--vector", "{vec}", "--mode", "multiply", "--out", OUT, msg="unknown mode 'multiply'"),
    C(*STEER, "--vector", "{vec}", "--positions", "everywhere", "--out", OUT, msg="'everywhere'"),
    C(*STEER, "--vector", "{vec}", "--model", "bogus", "--out", OUT, msg="unknown model 'bogus'"),
    C(*STEER, "--vector", "{vec}", "--out", "{file}", msg="is an existing file"),
    C(*STEER, "--vector", "{vec}", "--out", "{locked}", msg="(pid {holder_pid})"),
    # ---- report
    C("report", "{missing}", msg="no-such-file.jsonl"),
    C("report", "{run_bad}", msg="section(s) of"),
    C("report", "{run_bad}", "--out", "{dir}", msg="a-dir' is a directory; it needs a file name"),
    # ---- demo
    C(*DEMO, "--model", "bogus", "--out", OUT, msg="unknown model 'bogus'"),
    C(*DEMO, "--model", "{notmodel}", "--out", OUT, msg="is not a model"),
    C(*DEMO, "--model", T, "--device", "bogus", "--out", OUT, msg="unknown device 'bogus'"),
    C(*DEMO, "--model", T, "--only", "everything", "--out", OUT, msg="unknown demo stage 'everything'"),
    C(*DEMO, "--model", T, "--dtype", "int8", "--out", OUT, msg="invalid choice: 'int8'"),
    C(*DEMO, "--model", T, "--sae", "{missing}", "--out", OUT, msg="is not an SAE folder"),
    C(*DEMO, "--model", T, "--seed", "-1", "--out", OUT, msg="--seed: '-1'"),
    C(*DEMO, "--model", T, "--out", "{file}", msg="is an existing file"),
    C(*DEMO, "--model", T, "--out", "{locked}", msg="(pid {holder_pid})"),
    C(*DEMO, "--model", T, "--out", "{ro}/run", msg="is not writable"),
    # ---- the command itself
    C("teleport", msg="invalid choice: 'teleport'"),
    C("capture", "--input", msg="--input: expected one argument"),
]


@pytest.mark.parametrize(("argv", "msg"), CASES)
def test_bad_input(fx, tmp_path, capsys, argv, msg):
    paths = {**fx, "tmp": str(tmp_path)}
    needed = [k for k in ("full", "ro") if "{" + k + "}" in " ".join(argv)]
    for k in needed:
        if k not in paths:
            pytest.skip(f"needs a {k} tmpfs: mounting one needs root and a working `mount`")
    argv = [a.format(**paths) for a in argv]
    capsys.readouterr()
    before = _files(tmp_path)
    code = _run(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert msg.format(**paths) in lines[0], lines[0]
    if argv[0] != "report":
        assert _files(tmp_path) == before  # no file written before the refusal


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_table_covers_every_subcommand():
    from mechreason.cli import build_parser
    from mechreason.cli._docs import subcommands

    used = {c.values[0][0] for c in CASES}
    assert set(subcommands(build_parser())) - {"models"} <= used
    assert len(CASES) >= 120


# ---------------------------------------------------------------- long jobs, for real


def _capture_argv(inp: Path, out: Path, *extra: str) -> list[str]:
    return ["capture", "--model", "tiny-random", "--device", "cpu", "--input", str(inp),
            "--hooks", "blocks.*.hook_resid_post", "--dtype", "float32", "--batch-size", "1",
            "--shard-rows", "64", "--out", str(out), *extra]


def _many_texts(path: Path, n: int) -> Path:
    return _write(path, "".join(f"problem {i}: what is {i} plus {2 * i}?\n" for i in range(n)))


def _spawn(argv: list[str], **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mechreason", *argv], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **env})


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    import time

    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() - t0 < timeout
        time.sleep(0.005)


def _store_tensors(root: Path) -> dict[str, torch.Tensor]:
    from mechreason.activations import ActivationStore

    st = ActivationStore(root)
    return {h: st.load(h) for h in st.hooks} | {"_rows": torch.tensor(len(st.rows))}


def test_ctrl_c_prints_one_line_and_the_same_command_resumes(tmp_path):
    import signal

    inp = _many_texts(tmp_path / "in.txt", 400)
    argv = _capture_argv(inp, tmp_path / "store")
    proc = _spawn(argv)
    _wait_for(tmp_path / "store" / "shard-00001.json", proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("mechreason capture: interrupted; re-run the same "
                                            "command to resume")
    assert not (tmp_path / "store" / ".lock").exists()  # released on the way out
    assert main(argv) == 0
    assert main(_capture_argv(inp, tmp_path / "straight")) == 0
    a, b = _store_tensors(tmp_path / "store"), _store_tensors(tmp_path / "straight")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_disk_full_mid_run_is_one_line_leaves_nothing_partial_and_resumes(tmp_path, monkeypatch):
    import signal

    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "size=12m"):
        pytest.skip("needs a tmpfs: mounting one needs root and a working `mount`")
    try:
        inp = _many_texts(tmp_path / "in.txt", 300)
        argv = _capture_argv(inp, disk / "store")
        proc = _spawn(argv, MECHREASON_MIN_FREE_MB="0")
        _wait_for(disk / "store" / "shard-00000.json", proc)
        proc.send_signal(signal.SIGSTOP)  # fill the disk while the capture is mid-run
        with open(disk / "ballast", "wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        proc.send_signal(signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert "Traceback" not in err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ": error: " in ln]  # the rest: progress lines of the job
        assert errors == lines[-1:] and "disk full while writing" in errors[0], err
        assert str(disk / "store") in errors[0]
        left = sorted(p.name for p in (disk / "store").iterdir())
        assert not [n for n in left if n.endswith(".tmp") or n == ".lock"], left
        tensors = [n for n in left if n.endswith(".safetensors")]
        assert all(n.replace(".safetensors", ".json") in left for n in tensors)
        (disk / "ballast").unlink()
        monkeypatch.setenv("MECHREASON_MIN_FREE_MB", "0")  # the tmpfs is smaller than 16 MiB
        assert main(argv) == 0  # the same command resumes once space is freed
        assert main(_capture_argv(inp, tmp_path / "straight")) == 0
        a, b = _store_tensors(disk / "store"), _store_tensors(tmp_path / "straight")
        assert all(torch.equal(a[k], b[k]) for k in a)
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tiny, tmp_path, caplog):
    from mechreason.activations import CaptureConfig, capture

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    _write(tmp_path / "store" / ".lock", f"{dead}\n")
    with caplog.at_level("WARNING", logger="mechreason.outputs"):
        store = capture(tiny, ["one two", "three"], CaptureConfig(hooks=(HOOK,)),
                        tmp_path / "store", progress=False)
    assert len(store.items) == 2
    assert f"left by pid {dead}" in caplog.text
    assert not (tmp_path / "store" / ".lock").exists()


def test_two_concurrent_traces_jobs_write_each_record_once(tmp_path):
    """Two identical jobs into one traces file: the second exits at once naming the
    first's pid; the file holds every record once."""
    out = tmp_path / "t.jsonl"
    argv = ["traces", "--model", "tiny-random", "--device", "cpu", "--task", "arithmetic",
            "--n", "6", "--max-new-tokens", "24", "--batch-size", "1", "--out", str(out)]
    first = _spawn(argv)
    _wait_for(tmp_path / "t.jsonl.lock", first)
    second = _spawn(argv)
    _, err2 = second.communicate(timeout=120)
    _, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert second.returncode == 2 and f"(pid {first.pid})" in err2, err2
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert len(ids) == 6 and len(set(ids)) == 6


def test_sigkill_leaves_a_stale_lock_that_the_same_command_takes_over(tmp_path, caplog):
    """Kill-and-resume under the lock rule: a capture killed with SIGKILL leaves its lock
    file (with the dead pid); the same command takes it over with a warning and the store
    equals an uninterrupted one, nothing lost or duplicated."""
    import signal

    inp = _many_texts(tmp_path / "in.txt", 200)
    argv = _capture_argv(inp, tmp_path / "store")
    proc = _spawn(argv)
    _wait_for(tmp_path / "store" / "shard-00001.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (tmp_path / "store" / ".lock").read_text().strip() == str(proc.pid)
    with caplog.at_level("WARNING", logger="mechreason.outputs"):
        assert main(argv) == 0
    assert f"left by pid {proc.pid}" in caplog.text
    assert main(_capture_argv(inp, tmp_path / "straight")) == 0
    a, b = _store_tensors(tmp_path / "store"), _store_tensors(tmp_path / "straight")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
