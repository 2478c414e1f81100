"""Decoders over the residual depth (DESIGN 2.4): main-only (full or truncated depth), adaptive depth,
draft-only, and residual speculative decoding.

Each is a callable ``decoder(h[B, H]) -> DecodeResult(codes[B, T, D, L'], actions[B, T, A], stats)``
built from config with ``rsdvla.cli.build(cfg.decoder, main=..., draft=..., tokenizer=...)``.
"""

from rsdvla.decoding.acceptance import (
    AcceptanceRule,
    ActionDistanceAcceptance,
    AgreementAcceptance,
    CorrectedAgreementAcceptance,
    ExactAcceptance,
    Judgement,
    SamplingAcceptance,
)
from rsdvla.decoding.adaptive import AdaptiveDepthDecoder
from rsdvla.decoding.draft_only import DraftOnlyDecoder
from rsdvla.decoding.main_only import MainOnlyDecoder
from rsdvla.decoding.speculative import SpeculativeDecoder
from rsdvla.decoding.stats import STAGES, DecodeResult, DecodeStats, StageTimer

__all__ = [
    "STAGES",
    "AcceptanceRule",
    "ActionDistanceAcceptance",
    "AdaptiveDepthDecoder",
    "AgreementAcceptance",
    "CorrectedAgreementAcceptance",
    "DecodeResult",
    "DecodeStats",
    "DraftOnlyDecoder",
    "ExactAcceptance",
    "Judgement",
    "MainOnlyDecoder",
    "SamplingAcceptance",
    "SpeculativeDecoder",
    "StageTimer",
]
