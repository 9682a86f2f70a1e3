"""The GPU figures (``bash benchmarks/gpu.sh``; one GPU, under 10 minutes; not part of
the suite, which needs no GPU). A random-weight model with Llama-3.1-8B's shape in
bfloat16 (forward cost does not depend on weight values; the byte tokenizer of the
tiny model stands in, prompts are random ids):

* ``engine``: B0, B1a, B1b (benchmarks/bench_generation.py's arms) at batch 1 and 32,
  recorded as GPU-B0-batch1, ... with absolute tokens/s of both arms;
* ``vllm``: B7's shape of work, rollouts from 8 prefixes of one 512-token trace, R=64
  each, temperature 0.6, top-p 0.95, 256 new tokens at most, through vLLM
  (``load_format="dummy"``: random weights from the config, bfloat16) and through our
  engine's batched rollouts, recorded as GPU-B7 with tokens/s of both.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import RESULTS, figure, interleaved, record

LLAMA_31_8B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                   vocab_size=128256, max_position_embeddings=8192, rms_norm_eps=1e-5,
                   rope_theta=500000.0, tie_word_embeddings=False)
NAME = "random:llama-3.1-8b-shape"
SMOKE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=16, num_attention_heads=4,
             num_key_value_heads=2, head_dim=8, vocab_size=512, max_position_embeddings=1024,
             rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
"""``--smoke DIR``: a tiny shape (16 layers: the B1 arms steer layer 15) on the CPU in
float32, its figures written to DIR, so the suite checks this script's plumbing on a
machine without a GPU (tests/test_harness.py). Its numbers mean nothing."""


def model_8b(smoke: bool = False):
    """Llama-3.1-8B's shape, random bfloat16 weights built on the GPU (``smoke``: the
    tiny shape, float32, on the CPU)."""
    import transformers

    from mechreason.model.loading import Model
    from mechreason.model.tiny import tiny_tokenizer
    from mechreason.model.weights import cache_root

    tok = tiny_tokenizer(cache_root())
    cfg = transformers.LlamaConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                   pad_token_id=tok.pad_token_id,
                                   **(SMOKE if smoke else LLAMA_31_8B))
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    with torch.device("cpu" if smoke else "cuda"):
        torch.set_default_dtype(torch.float32 if smoke else torch.bfloat16)
        hf = transformers.LlamaForCausalLM(cfg).eval()
        torch.set_default_dtype(torch.float32)
    hf.generation_config.pad_token_id = tok.pad_token_id
    hf.generation_config.eos_token_id = None  # random weights: every row runs to its cap
    with torch.no_grad():  # greedy rows never pick the tokenizer's EOS (our engine stops on it)
        hf.get_output_embeddings().weight[tok.eos_token_id].zero_()
    name = "random:smoke-shape" if smoke else NAME
    return Model(name=name, hf=hf, tokenizer=tok, weights_hash=f"{name}:seed=0")


def _device_name(model) -> str:
    return torch.cuda.get_device_name(0) if model.device.type == "cuda" else "cpu"


def engine_figures(model, out: Path = RESULTS, batches: tuple[int, ...] = (1, 32)) -> None:
    from benchmarks.bench_generation import measure

    for fig in measure(model, ["B0", "B1a", "B1b"], batches=batches, prefix="GPU-",
                       sizes_extra={"model": model.name, "dtype": str(model.dtype),
                                    "device": _device_name(model)}):
        record(fig, "bash benchmarks/gpu.sh", out)
        print(fig.line(), flush=True)


def vllm_figure(model) -> None:
    from mechreason.anchors.rollouts import Job, backend_rollouts, batched_rollouts, rollout_seed
    from mechreason.backends.vllm_backend import VLLMBackend
    from mechreason.model.engine import SamplingConfig

    g = torch.Generator().manual_seed(0)
    trace = torch.randint(10, model.tokenizer.vocab_size, (512,), generator=g).tolist()
    jobs = [Job(f"{i}/{r}", 64 * (i + 1), rollout_seed(0, i, r)) for i in range(8) for r in range(64)]
    cfg = SamplingConfig(temperature=0.6, top_p=0.95, max_new_tokens=256)
    tokens: dict[str, list[int]] = {"vllm": [], "engine": []}
    with tempfile.TemporaryDirectory() as d:  # config and tokenizer only: dummy weights
        model.hf.config.save_pretrained(d)
        model.hf.generation_config.save_pretrained(d)
        model.tokenizer.save_pretrained(d)
        t0 = time.perf_counter()
        # our engine's copy of the model (16 GB) shares the GPU: vLLM takes half of it
        with VLLMBackend(model, dtype="bfloat16", model_dir=Path(d), check=False,
                         enforce_eager=False, single_process=False, max_num_seqs=256,
                         max_model_len=1024,
                         engine_args={"load_format": "dummy", "gpu_memory_utilization": 0.5}) as vllm:
            start = time.perf_counter() - t0

            def run(arm: str) -> None:
                runs = (backend_rollouts(model, vllm, trace, jobs, cfg) if arm == "vllm"
                        else batched_rollouts(model, trace, jobs, cfg, batch_size=64))
                tokens[arm].append(sum(len(t) for _, t in runs))

            t = interleaved({"vllm": lambda: run("vllm"), "engine": lambda: run("engine")},
                            repeats=3, warmup=1)
    per_call = {a: sum(v) / len(v) for a, v in tokens.items()}
    tok_s = {a: per_call[a] / t.median(a) for a in tokens}
    fig = figure("GPU-B7", "rollouts/s: vLLM / our engine, Llama-3.1-8B shape, bf16, one GPU",
                 t, "vllm", "engine", len(jobs), unit="rollouts/s",
                 sizes={"model": NAME, "rollouts": len(jobs), "cap": 256, "trace_len": 512,
                        "tokens_per_s": tok_s, "vllm_start_s": start,
                        "device": torch.cuda.get_device_name(0)},
                 note=f"tokens/s: vLLM {tok_s['vllm']:.0f}, engine {tok_s['engine']:.0f}")
    record(fig, "bash benchmarks/gpu.sh")
    print(fig.line(), fig.note, flush=True)


def main(argv: list[str]) -> int:
    smoke = "--smoke" in argv
    if smoke:
        out = Path(argv[argv.index("--smoke") + 1])
        if "vllm" in argv:
            print("benchmarks.gpu: --smoke runs the engine figures only", file=sys.stderr)
            return 2
    elif not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA device", file=sys.stderr)
        return 2
    model = model_8b(smoke)
    if "engine" in argv:
        engine_figures(model, out, (1, 2)) if smoke else engine_figures(model)
    if "vllm" in argv:
        vllm_figure(model)
    return 0


if __name__ == "__main__":  # vLLM's spawn-started processes re-import the main module
    sys.exit(main(sys.argv[1:]))
