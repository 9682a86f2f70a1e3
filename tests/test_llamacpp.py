"""llama.cpp itself steers with our exported control vector (slow; needs llama-cpp-python,
which is not a project dependency: build it from its source distribution, see
docs/directions.md).

llama-cpp-python binds libllama but not llama.cpp's ``common`` library, where the file
loader (``common_control_vector_load_one``) lives. So the file is read here by
llama.cpp's own GGUF parser (libggml-base, through ctypes) under that loader's rules
(tensor ``direction.{k}``, k >= 1, 1-D F32, one width; layer k's values at offset
``(k - 1) * n_embd`` of one buffer, times the strength) and handed to libllama's
``llama_set_adapter_cvec`` with a layer range, as ``--control-vector-scaled FILE S
--control-vector-layer-range A B`` does.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow
llama_cpp = pytest.importorskip(
    "llama_cpp", reason="llama-cpp-python is not installed (not a project dependency; "
                        "build it from its sdist as docs/directions.md says)")

LAYERS = range(10, 16)  # steered blocks, as --control-vector-layer-range 10 15
SCALE = 12.0
PROMPTS = ["What is 7 times 8?", "Name a colour of the sky.", "Tom has 3 apples and buys 4 more. How many now?"]
GGML_TYPE_F32 = 0


class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.POINTER(ctypes.c_void_p))]


def _ggml() -> ctypes.CDLL:
    g = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    sig = {"gguf_init_from_file": (ctypes.c_void_p, [ctypes.c_char_p, _InitParams]),
           "gguf_get_n_tensors": (ctypes.c_int64, [ctypes.c_void_p]),
           "gguf_get_tensor_name": (ctypes.c_char_p, [ctypes.c_void_p, ctypes.c_int64]),
           "gguf_get_tensor_type": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int64]),
           "ggml_get_tensor": (ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p]),
           "ggml_n_dims": (ctypes.c_int, [ctypes.c_void_p]),
           "ggml_nelements": (ctypes.c_int64, [ctypes.c_void_p]),
           "ggml_get_data_f32": (ctypes.POINTER(ctypes.c_float), [ctypes.c_void_p]),
           "ggml_free": (None, [ctypes.c_void_p]), "gguf_free": (None, [ctypes.c_void_p])}
    for name, (res, args) in sig.items():
        fn = getattr(g, name)
        fn.restype, fn.argtypes = res, args
    return g


def load_control_vector(path: Path, strength: float) -> tuple[np.ndarray, int]:
    """(buffer from layer 1 on, n_embd), by the rules of common_control_vector_load_one."""
    g = _ggml()
    ctx = ctypes.c_void_p()
    gctx = g.gguf_init_from_file(str(path).encode(), _InitParams(False, ctypes.pointer(ctx)))
    assert gctx, f"llama.cpp's GGUF parser rejected {path}"
    data: np.ndarray = np.zeros(0, np.float32)
    n_embd = -1
    try:
        for i in range(g.gguf_get_n_tensors(gctx)):
            name = g.gguf_get_tensor_name(gctx, i).decode()
            kind, _, num = name.partition(".")
            assert kind == "direction" and num.isdigit() and int(num) >= 1, name
            t = g.ggml_get_tensor(ctx, name.encode())
            assert g.gguf_get_tensor_type(gctx, i) == GGML_TYPE_F32 and g.ggml_n_dims(t) == 1
            n = g.ggml_nelements(t)
            assert n_embd in (-1, n)
            n_embd, layer = n, int(num)
            if data.size < n * layer:
                data = np.concatenate([data, np.zeros(n * layer - data.size, np.float32)])
            src = np.ctypeslib.as_array(g.ggml_get_data_f32(t), shape=(n,))
            data[n * (layer - 1):n * layer] += src * strength
    finally:
        g.ggml_free(ctx)
        g.gguf_free(gctx)
    return data, n_embd


def apply_cvec(llm, data: np.ndarray | None, n_embd: int, lo: int = -1, hi: int = -1) -> None:
    ctx = llm._ctx.ctx
    if data is None:  # what llama.cpp does to switch a control vector off
        rc = llama_cpp.llama_set_adapter_cvec(ctx, None, 0, n_embd, -1, -1)
    else:
        buf = (ctypes.c_float * data.size)(*data.tolist())
        rc = llama_cpp.llama_set_adapter_cvec(ctx, buf, data.size, n_embd, lo, hi)
    assert rc == 0


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float64)


def greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(out[-1:])
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean KL(P_a || P_b) over positions, and top-1 agreement."""
    la, lb = _log_softmax(a), _log_softmax(b)
    kl = (np.exp(la) * (la - lb)).sum(-1)
    return {"kl": float(kl.mean()), "kl_max": float(kl.max()),
            "top1": float((a.argmax(-1) == b.argmax(-1)).mean())}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from mechreason.directions.io import DirectionSet, export_gguf, vectors_for_export
    from mechreason.model.loading import load_model
    from mechreason.model.weights import BUNDLED, DEFAULT_MODEL, _gguf_file

    torch.set_num_threads(1)
    mech = load_model(DEFAULT_MODEL, device="cpu")
    gen = torch.Generator().manual_seed(0)
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in range(mech.n_layers)]
    v = torch.randn(len(hooks), mech.d_model, generator=gen)
    ds = DirectionSet(vectors=v / v.norm(dim=1, keepdim=True), hooks=hooks, method="random")
    path = tmp_path_factory.mktemp("cv") / "cv.gguf"
    assert export_gguf(path, vectors_for_export(ds, "all"), model_hint="llama",
                       skip_layer0=True) == list(range(1, mech.n_layers))
    llm = llama_cpp.Llama(model_path=str(_gguf_file(BUNDLED[DEFAULT_MODEL])), n_ctx=512,
                          n_batch=512, n_threads=1, logits_all=True, verbose=False, seed=0)
    ids = [mech.encode(mech.format_prompt(p)) for p in PROMPTS]
    return mech, ds, path, llm, ids


def mech_logits(mech, ds, ids: list[int], scale: float, shift: int = 0) -> np.ndarray:
    from mechreason.steering import Add, steer

    ivs = [Add(hook=f"blocks.{layer + shift}.hook_resid_post",
               vector=ds.vector(f"blocks.{layer}.hook_resid_post"), alpha=scale)
           for layer in LAYERS]
    x = torch.tensor([ids])
    with torch.inference_mode(), steer(mech, ivs):
        return mech.hf(input_ids=x).logits[0].double().numpy()


def test_scale_zero_is_no_control_vector_and_a_real_scale_steers(setup):
    _, _, path, llm, ids = setup
    zero, n_embd = load_control_vector(path, 0.0)
    real, _ = load_control_vector(path, SCALE)
    apply_cvec(llm, None, n_embd)
    plain = [greedy(llm, p, 24) for p in ids]
    plain_logits = llama_logits(llm, ids[0])
    apply_cvec(llm, zero, n_embd, 1, 29)
    assert [greedy(llm, p, 24) for p in ids] == plain
    assert np.array_equal(llama_logits(llm, ids[0]), plain_logits)
    apply_cvec(llm, real, n_embd, LAYERS[0], LAYERS[-1])
    steered = [greedy(llm, p, 24) for p in ids]
    apply_cvec(llm, None, n_embd)
    assert steered != plain


def test_llamacpp_agrees_with_mechreason_steering(setup):
    """llama.cpp's steered next-token distributions (Q4_1 weights) match mechreason's
    Add at blocks.L.hook_resid_post on the de-quantised weights, at every position of
    each prompt, far closer than the steering moved them; the same direction one block
    early agrees worse (the layer indexing is checked, not assumed)."""
    mech, ds, path, llm, ids = setup
    data, n_embd = load_control_vector(path, SCALE)
    res: dict[str, list] = {k: [] for k in ("base", "steered", "effect", "shifted")}
    for p in ids:
        apply_cvec(llm, None, n_embd)
        l0 = llama_logits(llm, p)
        apply_cvec(llm, data, n_embd, LAYERS[0], LAYERS[-1])
        ls = llama_logits(llm, p)
        apply_cvec(llm, None, n_embd)
        m0, ms = mech_logits(mech, ds, p, 0.0), mech_logits(mech, ds, p, SCALE)
        res["base"].append(compare(l0, m0))
        res["steered"].append(compare(ls, ms))
        res["effect"].append(compare(ms, m0))
        res["shifted"].append(compare(ls, mech_logits(mech, ds, p, SCALE, shift=-1)))
    summary = {k: {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
               for k, rows in res.items()}
    summary["positions"] = sum(len(p) for p in ids)
    print(json.dumps(summary, indent=1))
    keep = os.environ.get("MECHREASON_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "llamacpp_agreement.json").write_text(json.dumps(summary, indent=1))
    st, eff = summary["steered"], summary["effect"]
    assert eff["kl"] > 0.1  # the steering is real
    assert st["kl"] < 0.25 * eff["kl"] and st["top1"] >= 0.9
    assert st["kl"] < 5 * summary["base"]["kl"]  # of the order of the Q4_1 gap itself
    assert summary["shifted"]["kl"] > 2 * st["kl"]
