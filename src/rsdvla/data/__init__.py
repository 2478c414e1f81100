"""Data: normalization, hidden-state store, datamodule, LIBERO demonstrations (DESIGN 2.5)."""

from rsdvla.data.normalization import ActionNormalizer
from rsdvla.data.store import HiddenStateStore, HiddenStateStoreWriter, StoreError

__all__ = ["ActionNormalizer", "HiddenStateStore", "HiddenStateStoreWriter", "StoreError"]
