"""B2: activation capture throughput (DESIGN section 6).

(a) all 30 layers' resid_post written to disk in fp16 / a bare HF forward that computes
    the same hidden states (the decoder only: no ``lm_head``), same tokens, same 30
    layers, float32, no cache, no padding on either side (target >= 0.95). The baseline
    also runs the final norm (one RMSNorm, negligible); ours also casts to fp16 and
    writes the shards;
(b) layer 15 to disk in fp16 / SAELens's CacheActivationsRunner on the same tokens and
    hook (``model.layers.15`` of the same HF model = ``blocks.15.hook_resid_post``), both
    stopping after layer 15 (SAELens's HookedProxyLM stops at the hooked layer too);
    what is timed on its side is ``run()`` plus removing its output, as on ours (model
    loading and its per-run data iterator are set up before timing) (target >= 1.3);
(c) layer-15-only capture with early stop / the full HF forward, logits included: what a
    user runs instead when reading one layer through ``output_hidden_states`` or a hook
    without stopping (target >= 1.6).

Only the arms of the requested figures are timed, interleaved in one run.
A random-weight model with SmolLM2-135M's architecture keeps load time out (forward
cost does not depend on weight values).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import torch

from benchmarks.harness import Figure, figure, interleaved

FIGURES = ["B2a", "B2b", "B2c"]
N_SEQ, SEQ_LEN, BATCH = 16, 128, 8


def _tokens(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(10, vocab, (N_SEQ, SEQ_LEN), generator=g).tolist()


def _hf_forward(model, toks, decoder_only: bool = False) -> None:
    net = model.hf.model if decoder_only else model.hf
    with torch.inference_mode():
        for b in range(0, len(toks), BATCH):
            net(input_ids=torch.tensor(toks[b:b + BATCH]), use_cache=False)


def _our_capture(model, toks, hooks: tuple[str, ...], scratch: Path) -> None:
    from mechreason.activations import CaptureConfig, capture

    out = Path(tempfile.mkdtemp(dir=scratch))
    capture(model, toks, CaptureConfig(hooks=hooks, dtype="float16", batch_size=BATCH,
                                       shard_rows=N_SEQ * SEQ_LEN // 2), out, progress=False)
    shutil.rmtree(out)


def _saelens_runner(model_dir: Path, toks, layer: int, scratch: Path):
    """SAELens's cache runner over our tokens; the returned arm times ``run()`` and the
    removal of its output (as ours), nothing else: the model is loaded once here, and
    each call's activation store (SAELens's data iterator, consumed by one run) is
    built before timing starts."""
    import datasets
    from sae_lens.cache_activations_runner import CacheActivationsRunner, _mk_activations_store
    from sae_lens.config import CacheActivationsRunnerConfig

    from benchmarks.harness import REPEATS, WARMUP

    ds = datasets.Dataset.from_dict({"input_ids": toks})
    out = scratch / "saelens_out"
    cfg = CacheActivationsRunnerConfig(
        dataset_path="local", model_name=str(model_dir), model_class_name="AutoModelForCausalLM",
        hook_name=f"model.layers.{layer}", d_in=576, training_tokens=N_SEQ * SEQ_LEN,
        context_size=SEQ_LEN, model_batch_size=BATCH, new_cached_activations_path=str(out),
        shuffle=False, dtype="float16", device="cpu", prepend_bos=False,
        buffer_size_gb=N_SEQ * SEQ_LEN * 576 * 2 / 1e9)  # one buffer holds every token
    runner = CacheActivationsRunner(cfg, override_dataset=ds)
    stores = [_mk_activations_store(runner.model, cfg, override_dataset=ds)
              for _ in range(WARMUP + REPEATS)]

    def run() -> None:
        runner.activations_store = stores.pop(0)
        runner.run()
        shutil.rmtree(out)

    return run


def run(ids: list[str]) -> list[Figure]:
    from mechreason.model.loading import load_model

    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    torch.set_grad_enabled(False)
    model = load_model("random:smollm2-135m-instruct", device="cpu")
    toks = _tokens(model.d_vocab)
    n_tok = N_SEQ * SEQ_LEN
    all_hooks = tuple(f"blocks.{i}.hook_resid_post" for i in range(model.n_layers))
    l15 = ("blocks.15.hook_resid_post",)
    scratch = Path(tempfile.mkdtemp(prefix="mechreason-b2-"))
    want = {
        "B2a": ("capture all 30 layers to disk, fp16 / bare HF decoder forward (no lm_head)",
                "capture_all30", "hf_decoder_forward", 0.95),
        "B2b": ("capture layer 15 / SAELens CacheActivationsRunner layer 15 (run() only)",
                "capture_l15", "saelens_l15", 1.3),
        "B2c": ("capture layer 15 with early stop / full HF forward", "capture_l15",
                "hf_forward", 1.6),
    }
    makers = {"hf_decoder_forward": lambda: lambda: _hf_forward(model, toks, decoder_only=True),
              "hf_forward": lambda: lambda: _hf_forward(model, toks),
              "capture_all30": lambda: lambda: _our_capture(model, toks, all_hooks, scratch),
              "capture_l15": lambda: lambda: _our_capture(model, toks, l15, scratch),
              "saelens_l15": lambda: _saelens_arm(scratch, toks)}
    needed = [a for a in makers if any(a in want[f][1:3] for f in ids)]  # only these are timed
    arms = {a: makers[a]() for a in needed}
    t = interleaved(arms)
    shutil.rmtree(scratch, ignore_errors=True)
    sizes = {"sequences": N_SEQ, "seq_len": SEQ_LEN, "batch": BATCH, "store_dtype": "float16",
             "model": "random:smollm2-135m-instruct", "arms_timed": needed}
    return [figure(fid, title, t, ours, theirs, n_tok, target=target, sizes=sizes,
                   unit="tok/s") for fid, (title, ours, theirs, target) in want.items()
            if fid in ids]


def _saelens_arm(scratch: Path, toks):
    """The random model saved as an HF folder for SAELens to load, and its runner arm."""
    from mechreason.model.tiny import tiny_random, tiny_tokenizer
    from mechreason.model.weights import RANDOM_CONFIGS, cache_root

    plain, _, _ = tiny_random(0, cache_root(), RANDOM_CONFIGS["smollm2-135m-instruct"])
    model_dir = scratch / "model"
    plain.save_pretrained(model_dir)
    tiny_tokenizer(cache_root()).save_pretrained(model_dir)
    return _saelens_runner(model_dir, toks, 15, scratch)
