"""Main (depth-autoregressive) and draft models (DESIGN 2.2, 2.3)."""

from rsdvla.models.context_draft import ContextDraft, ContextDraftConfig
from rsdvla.models.draft import DraftConfig, DraftModel
from rsdvla.models.main import DecodeState, MainConfig, MainModel

__all__ = [
    "ContextDraft",
    "ContextDraftConfig",
    "DecodeState",
    "DraftConfig",
    "DraftModel",
    "MainConfig",
    "MainModel",
]
