"""Decoders over the residual depth: main-only baseline and residual speculative decoding (DESIGN 2.4).

Both are callables ``decoder(h[B, H]) -> DecodeResult(codes[B, T, D, L], actions[B, T, A], stats)``
built from config with ``hydra.utils.instantiate(cfg.decoder, main=..., draft=..., tokenizer=...)``.
"""

from rsdvla.decoding.acceptance import (
    AcceptanceRule,
    ActionDistanceAcceptance,
    AgreementAcceptance,
    ExactAcceptance,
    Judgement,
    SamplingAcceptance,
)
from rsdvla.decoding.main_only import MainOnlyDecoder
from rsdvla.decoding.speculative import SpeculativeDecoder
from rsdvla.decoding.stats import STAGES, DecodeResult, DecodeStats

__all__ = [
    "STAGES",
    "AcceptanceRule",
    "ActionDistanceAcceptance",
    "AgreementAcceptance",
    "DecodeResult",
    "DecodeStats",
    "ExactAcceptance",
    "Judgement",
    "MainOnlyDecoder",
    "SamplingAcceptance",
    "SpeculativeDecoder",
]
