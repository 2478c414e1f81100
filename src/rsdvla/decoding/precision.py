"""``precision``: the dtype the main model and the draft decode in (the tokenizer stays float32).

``float32`` is the default and what every training run produces. ``bfloat16`` is what OpenVLA
runs in on a GPU, and on CPUs with AMX (Sapphire Rapids and later) it is also what makes a
verify pass over k+1 positions cost about one main step instead of 1.6-2 (measured in
``benchmarks/bench_decode.py``). Hidden states are standardized in float32 either way
(``InputStandardizer``); logits come out in the model's dtype and every decoder only takes
their argmax or, for sampling rules, their float32 softmax.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_precision(name: str, field: str = "precision") -> torch.dtype:
    """``"float32" | "bfloat16"`` -> the torch dtype; anything else fails in one line naming ``field``."""
    if name not in PRECISIONS:
        raise ValueError(
            f"{field}={name!r} is not a decoding precision; use one of {', '.join(PRECISIONS)}"
        )
    return PRECISIONS[name]


def cast_for_decoding(dtype: torch.dtype, *models: nn.Module | None) -> None:
    """Cast each model (None skipped) to ``dtype`` in place, for inference only."""
    for model in models:
        if model is not None:
            model.to(dtype)
