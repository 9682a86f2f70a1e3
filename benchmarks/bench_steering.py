"""B1 and B6: steering overhead in KV-cached HF ``generate`` (DESIGN section 6).

Steered / unsteered tokens per second at batch 1 and 8, greedy, every row forced to the
same length (``min_new_tokens``), arms interleaved:

* B1a: one direction added on one layer (layer 15, every position): target >= 0.97;
* B1b: four interventions on all 30 layers (two at the first generated token, two at
  sentence starts detected online; 30 fused hooks): target >= 0.93;
* B6: one SAE latent clamped (layer 15, a 4608-latent JumpReLU SAE, every generated
  position, decoder-delta update): target >= 0.95.

A random-weight model with SmolLM2-135M's architecture keeps load time out (forward
cost does not depend on weight values).
"""

from __future__ import annotations

import torch

from benchmarks.harness import Figure, cpu_clock_ok, interleaved, throughput_figure

FIGURES = ["B1", "B6"]
PROMPT_LEN, NEW_TOKENS, REPEATS = 32, 32, 5


def _prompts(vocab: int, batch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(batch)
    return torch.randint(10, vocab, (batch, PROMPT_LEN), generator=g).tolist()


def _generate(model, prompts) -> None:
    from mechreason.steering import hf_generate

    hf_generate(model, prompts, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)


def _arms(model) -> dict[str, list]:
    from mechreason.sae.model import SAEConfig, SparseAutoencoder
    from mechreason.steering import Add, Clamp

    d, g = model.d_model, torch.Generator().manual_seed(0)
    vec = [torch.randn(d, generator=g) for _ in range(4)]
    sae = SparseAutoencoder(SAEConfig(d_in=d, d_sae=8 * d, arch="jumprelu",
                                      hook="blocks.15.hook_resid_post"))
    many = [Add(hook=f"blocks.{L}.hook_resid_post", vector=vec[i], alpha=0.5,
                positions="first" if i < 2 else "sentence-starts")
            for L in range(model.n_layers) for i in range(4)]
    return {
        "B1a": [Add(hook="blocks.15.hook_resid_post", vector=vec[0], alpha=0.5)],
        "B1b": many,
        "B6": [Clamp(sae=sae, latent=7, alpha=2.0, positions="generated")],
    }


def run(ids: list[str]) -> list[Figure]:
    from mechreason.models import load_model
    from mechreason.steering import steer

    model = load_model("random:smollm2-135m-instruct", device="cpu")
    wanted = {k: v for k, v in _arms(model).items() if k[:2] in ids}
    targets = {"B1a": 0.97, "B1b": 0.93, "B6": 0.95}
    figs = []
    for batch in (1, 8):
        prompts = _prompts(model.d_vocab, batch)

        def arm(ivs, prompts=prompts):
            def go() -> None:
                if ivs is None:
                    _generate(model, prompts)
                    return
                with steer(model, ivs):
                    _generate(model, prompts)
            return go

        arms = {"unsteered": arm(None)} | {k: arm(v) for k, v in wanted.items()}
        secs = interleaved(arms, repeats=REPEATS, clock="cpu" if cpu_clock_ok() else "wall")
        for k in wanted:
            figs.append(throughput_figure(f"{k}-batch{batch}", batch * NEW_TOKENS, secs, k,
                                          "unsteered", target=targets[k]))
    return figs
