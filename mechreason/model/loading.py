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

import dataclasses
import importlib
import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechreason.errors import MechReasonError, unknown
from mechreason.model.bridge import boot_bridge, bridge_point, check_bridge_cache
from mechreason.model.hookpoints import HookPoint, build_points, family_of
from mechreason.model.tiny import TINY_FAMILIES, TINY_FAMILY_CONFIGS, tiny_random
from mechreason.model.weights import (
    BUNDLED,
    DEFAULT_MODEL,
    RANDOM_CONFIGS,
    RANDOM_PREFIX,
    TINY_RANDOM,
    bundled_dir,
    cache_root,
    dir_hash,
    from_pretrained,
    parse_dtype,
)

if TYPE_CHECKING:
    import torch
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


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
        return {n: bridge_point(n, p) for n, p in self.tl_bridge.hook_dict.items()}

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
    torch_dtype = parse_dtype(dtype)
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
    bridge = boot_bridge(hf_name, hf, tok)
    check_bridge_cache(hf)
    return Model(name=name, hf=hf, tokenizer=tok, weights_hash=whash,
                 backend=backend, tl_bridge=bridge)


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


def _load_hf(name: str, torch_dtype: torch.dtype, device_map: Any, seed: int,
             cache: Path) -> tuple[Any, PreTrainedTokenizerBase, str, str]:
    """(HF model, tokenizer, weights hash, the model's hub-style name)."""
    if name == TINY_RANDOM:
        hf, tok, whash = tiny_random(seed, cache)
        return hf, tok, whash, TINY_RANDOM
    if name.startswith(TINY_RANDOM + "-") and name[len(TINY_RANDOM) + 1:] in TINY_FAMILIES:
        fam = name[len(TINY_RANDOM) + 1:]
        hf, tok, whash = tiny_random(seed, cache, TINY_FAMILY_CONFIGS[fam], fam)
        return hf, tok, whash, name
    if name.startswith(RANDOM_PREFIX):
        arch = name.removeprefix(RANDOM_PREFIX)
        if arch not in RANDOM_CONFIGS:
            raise unknown("random architecture", arch, RANDOM_CONFIGS)
        hf, tok, whash = tiny_random(seed, cache, RANDOM_CONFIGS[arch])
        return hf, tok, whash, name
    if name in BUNDLED:
        local, whash = bundled_dir(BUNDLED[name], cache)
        hf, tok = from_pretrained(local, torch_dtype, device_map)
        return hf, tok, whash, BUNDLED[name].hf_id
    if Path(name).is_dir():
        hf, tok = from_pretrained(name, torch_dtype, device_map)
        return hf, tok, dir_hash(Path(name)), str(name)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        try:
            hf, tok = from_pretrained(name, torch_dtype, device_map)
        except OSError as e:
            raise MechReasonError(
                f"could not load hub model {name!r} (is the hub reachable?): {e}") from e
        return hf, tok, f"hub:{name}@{getattr(hf.config, '_commit_hash', None)}", name
    tiny = [f"{TINY_RANDOM}-{f}" for f in TINY_FAMILIES if f != "llama"]
    raise unknown("model", name, [TINY_RANDOM, *tiny, *BUNDLED, "<hub id>", "<local dir>"])
