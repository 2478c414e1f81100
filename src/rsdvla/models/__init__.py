"""Main (depth-autoregressive) and draft models (DESIGN 2.2, 2.3)."""

from rsdvla.models.draft import DraftConfig, DraftModel
from rsdvla.models.main import DecodeState, MainConfig, MainModel

__all__ = ["DecodeState", "DraftConfig", "DraftModel", "MainConfig", "MainModel"]
