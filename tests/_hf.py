"""The oracle for generation tests: plain Hugging Face ``generate`` (no mechreason
engine), left-padded, each row's new tokens cut after EOS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mechreason.model.engine import left_pad


def hf_generate(model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
                use_cache: bool = True, **kw: Any) -> list[list[int]]:
    ids, mask = left_pad(model, prompts)
    with torch.inference_mode():
        out = model.hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                do_sample=False, use_cache=use_cache, pad_token_id=model.pad_id,
                                **kw)
    eos = set(model.eos_ids)
    rows = []
    for row in out[:, ids.shape[1]:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows
