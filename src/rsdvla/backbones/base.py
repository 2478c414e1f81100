"""The backbone interface: observations in, one hidden state per sample out.

A batch is a dict of numpy arrays or tensors (B samples):

    primary       [B, h, w, 3] uint8   third-person camera, as stored in the demo HDF5
    wrist         [B, h, w, 3] uint8   wrist camera (optional)
    proprio       [B, 8]               eef pos (3), eef axis-angle (3), gripper qpos (2)
    object_state  [B, S]               privileged object poses (optional)
    instruction   list[str]            length B

``encode(batch) -> Tensor[B, H]`` (float32, on CPU). ``required_obs`` names the keys a backbone
reads, so extraction loads nothing else (no pixels for the state backbone).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn


class Backbone(nn.Module):
    """Base class: subclasses set ``hidden_dim``, ``backbone_id``, ``required_obs`` and implement ``encode``."""

    hidden_dim: int
    backbone_id: str
    required_obs: tuple[str, ...] = ()

    def encode(self, batch: Mapping) -> torch.Tensor:  # pragma: no cover - interface
        """Observations of B samples -> hidden states ``[B, H]``."""
        raise NotImplementedError

    def forward(self, batch: Mapping) -> torch.Tensor:
        return self.encode(batch)

    def check_batch(self, batch: Mapping) -> int:
        """Batch size B; raises one line naming a missing or inconsistent key."""
        missing = [k for k in (*self.required_obs, "instruction") if k not in batch]
        if missing:
            raise KeyError(
                f"{type(self).__name__}: batch lacks {missing}; pass them (required_obs={list(self.required_obs)})"
            )
        size = len(batch["instruction"])
        for key in self.required_obs:
            if len(batch[key]) != size:
                raise ValueError(
                    f"{type(self).__name__}: batch key `{key}` has {len(batch[key])} rows but `instruction` has {size}"
                )
        return size


def as_float_tensor(value, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """numpy array or tensor -> float tensor on CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", dtype)
    return torch.as_tensor(np.asarray(value), dtype=dtype)


def as_uint8_images(value) -> np.ndarray:
    """``[B, h, w, 3]`` numpy array or tensor -> uint8 numpy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    value = np.asarray(value)
    if value.ndim != 4 or value.shape[-1] != 3 or value.dtype != np.uint8:
        raise ValueError(
            f"images: expected [B, h, w, 3] uint8, got shape {value.shape} dtype {value.dtype}"
        )
    return value
