"""B2: activation capture throughput (DESIGN section 6).

(a) all 30 layers' resid_post written to disk in fp16 / a bare HF forward that computes
    the same hidden states (the decoder only: no ``lm_head``), same tokens (target >= 0.95);
(b) ours / SAELens's CacheActivationsRunner on the same tokens and hook (target >= 1.3).
    SAELens caches one hook per run, so the like-for-like arm is one hook (layer 15)
    with early stop on both sides; the all-30-layers figure is reported beside it;
(c) layer-15-only capture with early stop / the full HF forward (target >= 1.6).

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
    """Build SAELens's cache runner over our tokens; return a callable timing only run()."""
    import datasets
    from sae_lens.cache_activations_runner import CacheActivationsRunner
    from sae_lens.config import CacheActivationsRunnerConfig

    ds = datasets.Dataset.from_dict({"input_ids": toks})

    def run() -> float:
        import time

        out = Path(tempfile.mkdtemp(dir=scratch))
        cfg = CacheActivationsRunnerConfig(
            dataset_path="local", model_name=str(model_dir), model_class_name="AutoModelForCausalLM",
            hook_name=f"model.layers.{layer}", d_in=576, training_tokens=N_SEQ * SEQ_LEN,
            context_size=SEQ_LEN, model_batch_size=BATCH, new_cached_activations_path=str(out),
            shuffle=False, dtype="float16", device="cpu", prepend_bos=False,
            buffer_size_gb=N_SEQ * SEQ_LEN * 576 * 2 / 1e9)  # one buffer holds every token
        runner = CacheActivationsRunner(cfg, override_dataset=ds)  # loads the model: not timed
        t0 = time.perf_counter()
        runner.run()
        took = time.perf_counter() - t0
        shutil.rmtree(out)
        return took

    return run


def run(ids: list[str]) -> list[Figure]:
    from mechreason.model.loading import load_model
    from mechreason.model.tiny import _tiny_tokenizer, tiny_random
    from mechreason.model.weights import cache_root

    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    torch.set_grad_enabled(False)
    model = load_model("random:smollm2-135m-instruct", device="cpu")
    toks = _tokens(model.d_vocab)
    n_tok = N_SEQ * SEQ_LEN
    all_hooks = tuple(f"blocks.{i}.hook_resid_post" for i in range(model.n_layers))
    l15 = ("blocks.15.hook_resid_post",)
    scratch = Path(tempfile.mkdtemp(prefix="mechreason-b2-"))
    arms = {"hf_decoder_forward": lambda: _hf_forward(model, toks, decoder_only=True),
            "hf_forward": lambda: _hf_forward(model, toks),
            "capture_all30": lambda: _our_capture(model, toks, all_hooks, scratch),
            "capture_l15": lambda: _our_capture(model, toks, l15, scratch)}
    if "B2b" in ids:
        from mechreason.model.weights import RANDOM_CONFIGS

        plain, _, _ = tiny_random(0, cache_root(), RANDOM_CONFIGS["smollm2-135m-instruct"])
        model_dir = scratch / "model"
        plain.save_pretrained(model_dir)
        _tiny_tokenizer(cache_root()).save_pretrained(model_dir)
        arms["saelens_l15"] = _saelens_runner(model_dir, toks, 15, scratch)
    t = interleaved(arms)
    shutil.rmtree(scratch, ignore_errors=True)
    sizes = {"sequences": N_SEQ, "seq_len": SEQ_LEN, "batch": BATCH, "store_dtype": "float16",
             "model": "random:smollm2-135m-instruct"}
    want = {
        "B2a": ("capture all 30 layers to disk, fp16 / bare HF decoder forward (no lm_head)",
                "capture_all30", "hf_decoder_forward", 0.95),
        "B2b": ("capture layer 15 / SAELens CacheActivationsRunner layer 15 (run() only)",
                "capture_l15", "saelens_l15", 1.3),
        "B2c": ("capture layer 15 with early stop / full HF forward", "capture_l15",
                "hf_forward", 1.6),
    }
    return [figure(fid, title, t, ours, theirs, n_tok, target=target, sizes=sizes,
                   unit="tok/s") for fid, (title, ours, theirs, target) in want.items()
            if fid in ids]
