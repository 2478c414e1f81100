"""Train/validation split by episode (never by step), deterministic for a seed."""

from __future__ import annotations

import numpy as np


def split_episodes(episode_ids, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique episode ids -> (train_ids, val_ids), sorted; at least one of each when possible.

    Args:
        episode_ids: episode index per sample ``[N]`` (duplicates allowed).
        val_fraction: share of episodes held out, in [0, 1).
        seed: permutation seed.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    unique = np.unique(np.asarray(episode_ids))
    order = np.random.default_rng(seed).permutation(unique)
    n_val = int(round(len(unique) * val_fraction))
    if val_fraction > 0 and len(unique) > 1:
        n_val = min(max(n_val, 1), len(unique) - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
