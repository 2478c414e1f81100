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


BF16_EXACT_NOTE = (
    "precision=bfloat16 with `exact` acceptance: not bit-identical to bf16 main-only on a CPU "
    "(the verify pass over k+1 positions and single steps round differently in bf16: token agreement "
    "0.96 at batch 1 with the quickstart's trained stack on an AMD EPYC with avx512_bf16); use "
    "precision=float32 where identity matters"
)
"""The one line printed at run time when ``exact`` runs in bfloat16 on a CPU (docs/architecture.md)."""


def exactness_note(decoder, precision: str, device: torch.device) -> str | None:
    """:data:`BF16_EXACT_NOTE` when ``decoder`` is speculative with ``exact`` acceptance, decoding
    in bfloat16 on a CPU; else None. Float32 ``exact`` returns main-only's codes (tested)."""
    from rsdvla.decoding.acceptance import ExactAcceptance

    rule = getattr(decoder, "acceptance", None)
    if (
        precision == "bfloat16"
        and torch.device(device).type == "cpu"
        and isinstance(rule, ExactAcceptance)
    ):
        return BF16_EXACT_NOTE
    return None


def cast_for_decoding(dtype: torch.dtype, *models: nn.Module | None) -> None:
    """Cast each model (None skipped) to ``dtype`` in place, for inference only."""
    for model in models:
        if model is not None:
            model.to(dtype)
