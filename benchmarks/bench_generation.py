"""B0 and B1: generation through mechreason against what a user would run instead
(DESIGN section 6), on a random-weight model with SmolLM2-135M's shape (forward cost
does not depend on weight values), greedy, every row exactly ``NEW`` tokens:

* B0: mechreason's engine, unsteered / plain HF ``generate`` on the same (unmodified)
  model: target >= 0.99;
* B1a: one ``Add`` at ``blocks.15.hook_resid_post``, every position / plain HF
  ``generate`` with a hand-written forward hook adding the same vector: target >= 0.98;
* B1b: four interventions on all 30 layers (two at the first generated token, two at
  sentence starts detected online) / plain HF ``generate`` with 30 hand-written hooks
  adding a vector at every position: target >= 0.95.

The same arms through the TransformerLens Bridge backend are recorded as B0-bridge and
B1a-bridge (no target: they show what that backend costs).
"""

from __future__ import annotations

import torch

from benchmarks.harness import Figure, figure, interleaved

FIGURES = ["B0", "B1a", "B1b", "B0-bridge", "B1a-bridge"]
PROMPT_LEN, NEW = 32, 48
MODEL = "random:smollm2-135m-instruct"


def _prompts(vocab: int, batch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(batch)
    return torch.randint(10, vocab, (batch, PROMPT_LEN), generator=g).tolist()


def _hf_generate(model, ids: torch.Tensor) -> None:
    with torch.inference_mode():
        model.hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                          max_new_tokens=NEW, min_new_tokens=NEW, pad_token_id=model.pad_id)


def _hand_hooks(model, vectors: dict[int, torch.Tensor]):
    """What a user writes by hand: a forward hook per layer adding a vector everywhere."""
    def make(v: torch.Tensor):
        return lambda _m, _i, out: out + v if isinstance(out, torch.Tensor) else (out[0] + v, *out[1:])
    return [model.hf.model.layers[L].register_forward_hook(make(v)) for L, v in vectors.items()]


def _ours(model, prompts, ivs=None) -> None:
    from mechreason.model.generation import SamplingConfig, generate
    from mechreason.steering import steer

    cfg = SamplingConfig(max_new_tokens=NEW, batch_size=len(prompts))
    if ivs is None:
        gens = generate(model, prompts, cfg)
    else:
        with steer(model, ivs):
            gens = generate(model, prompts, cfg)
    assert all(len(g.ids) == NEW for g in gens), "equal work: every row must make NEW tokens"


def _with_hooks(model, vectors, fn):
    def go() -> None:
        handles = _hand_hooks(model, vectors)
        try:
            fn()
        finally:
            for h in handles:
                h.remove()
    return go


def run(ids: list[str]) -> list[Figure]:
    from mechreason.model.loading import load_model

    model = load_model(MODEL, device="cpu")
    bridge = load_model(MODEL, device="cpu", backend="transformer-lens") if any(
        i.endswith("-bridge") for i in ids) else None
    return measure(model, ids, bridge)


def measure(model, ids: list[str], bridge=None, *, batches=(1, 8), prefix: str = "",
            sizes_extra: dict | None = None) -> list[Figure]:
    """The figures of ``ids`` on ``model`` (the GPU script passes its own model, batch
    sizes and an id prefix)."""
    from mechreason.steering import Add

    g = torch.Generator().manual_seed(0)
    vec = [0.5 * torch.randn(model.d_model, generator=g).to(model.device, model.dtype)
           for _ in range(4)]
    one = [Add(hook="blocks.15.hook_resid_post", vector=vec[0])]
    many = [Add(hook=f"blocks.{L}.hook_resid_post", vector=vec[i],
                positions="first" if i < 2 else "sentence-starts")
            for L in range(model.n_layers) for i in range(4)]
    figs = []
    for batch in batches:
        prompts = _prompts(model.d_vocab, batch)
        x = torch.tensor(prompts, device=model.device)
        arms = {
            "hf_generate": lambda x=x: _hf_generate(model, x),
            "hf_generate+hook": _with_hooks(model, {15: vec[0]}, lambda x=x: _hf_generate(model, x)),
            "mechreason": lambda p=prompts: _ours(model, p),
            "mechreason+Add": lambda p=prompts: _ours(model, p, one),
        }
        if "B1b" in ids:
            arms["hf_generate+30hooks"] = _with_hooks(
                model, {L: vec[0] for L in range(model.n_layers)}, lambda x=x: _hf_generate(model, x))
            arms["mechreason+4x30"] = lambda p=prompts: _ours(model, p, many)
        if bridge is not None:
            arms["bridge"] = lambda p=prompts: _ours(bridge, p)
            arms["bridge+Add"] = lambda p=prompts: _ours(bridge, p, one)
        t = interleaved(arms)
        sizes = {"batch": batch, "prompt_len": PROMPT_LEN, "new_tokens": NEW, "model": MODEL,
                 "dtype": "float32", "decoding": "greedy", **(sizes_extra or {})}
        units = batch * NEW
        want = {
            "B0": ("mechreason unsteered / plain HF generate", "mechreason", "hf_generate", 0.99),
            "B1a": ("one Add at layer 15, every position / HF generate + hand-written hook",
                    "mechreason+Add", "hf_generate+hook", 0.98),
            "B1b": ("4 interventions x 30 layers (first token, sentence starts) / HF generate "
                    "+ 30 hand-written hooks", "mechreason+4x30", "hf_generate+30hooks", 0.95),
            "B0-bridge": ("Bridge backend unsteered / plain HF generate", "bridge", "hf_generate",
                          None),
            "B1a-bridge": ("Bridge backend, one Add / HF generate + hand-written hook",
                           "bridge+Add", "hf_generate+hook", None),
        }
        for fid, (title, ours, theirs, target) in want.items():
            if fid in ids and ours in t.wall:
                figs.append(figure(f"{prefix}{fid}-batch{batch}", title, t, ours, theirs, units,
                                   target=target, sizes=sizes))
    return figs
