"""Action normalization as OpenVLA does it: q01/q99 bounds mapped to [-1, 1].

The gripper dimension (and any dimension with ``mask == False``) is left as is.
Statistics are a plain dict so they travel inside HDF5 attributes and checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

STAT_KEYS = ("q01", "q99", "mean", "std", "mask")


class ActionNormalizer:
    """Maps actions ``[..., A]`` between raw units and ``[-1, 1]``.

    ``normalize(a) = clip(2 * (a - q01) / (q99 - q01) - 1, -1, 1)`` on masked dims.
    """

    def __init__(self, q01, q99, mean=None, std=None, mask=None):
        self.q01 = np.asarray(q01, dtype=np.float32)
        self.q99 = np.asarray(q99, dtype=np.float32)
        dim = self.q01.shape[0]
        self.mean = np.zeros(dim, np.float32) if mean is None else np.asarray(mean, np.float32)
        self.std = np.ones(dim, np.float32) if std is None else np.asarray(std, np.float32)
        if mask is None:
            mask = [True] * (dim - 1) + [False]  # gripper (last dim) left as is
        self.mask = np.asarray(mask, dtype=bool)
        if not (self.q01.shape == self.q99.shape == self.mask.shape == (dim,)):
            raise ValueError(f"action stats: q01/q99/mask must all have shape [{dim}]")

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(cls, actions: np.ndarray, mask=None) -> ActionNormalizer:
        """Statistics from raw actions ``[N, A]`` (all steps of all episodes)."""
        actions = np.asarray(actions, dtype=np.float64).reshape(-1, np.shape(actions)[-1])
        if not np.isfinite(actions).all():
            raise ValueError(
                "actions contain NaN or inf: clean the demonstrations before fitting statistics"
            )
        return cls(
            q01=np.quantile(actions, 0.01, axis=0),
            q99=np.quantile(actions, 0.99, axis=0),
            mean=actions.mean(0),
            std=actions.std(0),
            mask=mask,
        )

    @classmethod
    def from_dict(cls, stats: Mapping, source: str = "statistics") -> ActionNormalizer:
        missing = [k for k in ("q01", "q99") if k not in stats]
        if missing:
            raise ValueError(
                f"{source}: action statistics lack {missing}; re-create it with a store or checkpoint that records `action_stats`"
            )
        return cls(**{k: stats[k] for k in STAT_KEYS if k in stats})

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in STAT_KEYS}

    # ------------------------------------------------------------------ transforms
    def _bounds(self, like):
        if isinstance(like, torch.Tensor):
            as_t = lambda x: torch.as_tensor(x, device=like.device)  # noqa: E731
            return as_t(self.q01).to(like.dtype), as_t(self.q99).to(like.dtype), as_t(self.mask)
        return self.q01, self.q99, self.mask

    def normalize(self, actions):
        """Raw ``[..., A]`` -> normalized ``[..., A]`` (numpy or torch)."""
        lo, hi, mask = self._bounds(actions)
        scale = (hi - lo).clip(1e-8, None)  # a constant dimension maps to -1, not NaN
        out = 2 * (actions - lo) / scale - 1
        out = out.clip(-1, 1)
        return (
            torch.where(mask, out, actions)
            if isinstance(actions, torch.Tensor)
            else np.where(mask, out, actions)
        )

    def unnormalize(self, actions):
        """Normalized ``[..., A]`` -> raw units ``[..., A]`` (numpy or torch)."""
        lo, hi, mask = self._bounds(actions)
        out = (actions.clip(-1, 1) + 1) / 2 * (hi - lo) + lo
        return (
            torch.where(mask, out, actions)
            if isinstance(actions, torch.Tensor)
            else np.where(mask, out, actions)
        )
