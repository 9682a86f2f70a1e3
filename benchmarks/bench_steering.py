"""B6: generation with one SAE latent clamped (layer 15, a 4608-latent JumpReLU SAE,
every position, decoder-delta update) / plain HF ``generate`` with a hand-written hook
doing the same clamp (a full encode of that latent, then the decoder delta): target
>= 0.95. Same model, prompts and lengths as B0/B1 (:mod:`benchmarks.bench_generation`).
"""

from __future__ import annotations

import torch

from benchmarks.bench_generation import MODEL, NEW, PROMPT_LEN, _hf_generate, _ours, _prompts
from benchmarks.harness import Figure, figure, interleaved

FIGURES = ["B6"]
LATENT, ALPHA = 7, 2.0


def _hand_clamp(model, sae):
    """The clamp a user writes by hand on layer 15's output."""
    w_enc, b_enc = sae.W_enc[:, LATENT].detach(), sae.b_enc[LATENT].detach()
    w_dec, thr = sae.W_dec[LATENT].detach(), sae.threshold[LATENT].detach()
    b_dec = sae.b_dec.detach()

    def hook(_m, _i, out):
        pre = (out - b_dec) @ w_enc + b_enc
        act = pre.clamp_min(0) * (pre > thr)
        return out + (ALPHA - act)[..., None] * w_dec
    return model.hf.model.layers[15].register_forward_hook(hook)


def run(ids: list[str]) -> list[Figure]:
    from mechreason.model.loading import load_model
    from mechreason.sae.model import SAEConfig, SparseAutoencoder
    from mechreason.steering import Clamp

    model = load_model(MODEL, device="cpu")
    torch.manual_seed(0)
    sae = SparseAutoencoder(SAEConfig(d_in=model.d_model, d_sae=8 * model.d_model,
                                      arch="jumprelu", hook="blocks.15.hook_resid_post"))
    clamp = [Clamp(sae=sae, latent=LATENT, alpha=ALPHA)]
    figs = []
    for batch in (1, 8):
        prompts = _prompts(model.d_vocab, batch)
        x = torch.tensor(prompts)

        def hand(x=x) -> None:
            h = _hand_clamp(model, sae)
            try:
                _hf_generate(model, x)
            finally:
                h.remove()

        t = interleaved({"hf_generate+clamp_hook": hand,
                         "mechreason+Clamp": lambda p=prompts: _ours(model, p, clamp)})
        figs.append(figure(f"B6-batch{batch}", "one SAE latent clamped / HF generate + "
                           "hand-written clamp hook", t, "mechreason+Clamp",
                           "hf_generate+clamp_hook", batch * NEW, target=0.95,
                           sizes={"batch": batch, "prompt_len": PROMPT_LEN, "new_tokens": NEW,
                                  "d_sae": 8 * model.d_model, "model": MODEL}))
    return figs
