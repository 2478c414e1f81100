"""Privileged low-dimensional state backbone: learns real LIBERO tasks on a CPU.

Features per sample (D = 8 + S + I):
    proprio       [8]  eef pos, eef axis-angle, gripper qpos
    object_state  [S]  object poses, zero-padded to ``object_state_dim`` (S)
    instruction   [I]  a fixed random unit-scale vector seeded by sha256(instruction text)

Hidden state ``h = x @ Q.T`` with ``Q [H, D]`` a fixed random matrix with orthonormal columns
(QR of a Gaussian drawn from ``numpy.random.default_rng(seed)``). Choice and why: the map is
an isometry (``|h| = |x|`` and ``x = h @ Q``), so no information is lost and nothing here is
trained; the heads downstream (draft projection, main model context) learn everything. It
spreads the few state dimensions over all H channels so the hidden state has the same width
and roughly the same layout (dense, no dead channels) as a VLA's. Everything is derived from
``seed`` and the instruction text, so two processes produce identical hidden states.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping

import numpy as np
import torch

from rsdvla.backbones.base import Backbone, as_float_tensor

PROPRIO_DIM = 8


def instruction_embedding(instruction: str, dim: int) -> np.ndarray:
    """``[dim]`` float32, deterministic across processes: Gaussian seeded by sha256 of the UTF-8 text, scaled to unit RMS norm."""
    digest = hashlib.sha256(instruction.encode("utf-8")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return (rng.standard_normal(dim) / np.sqrt(max(dim, 1))).astype(np.float32)


@functools.lru_cache(maxsize=8)
def orthonormal_projection(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
    """``Q [out_dim, in_dim]`` with orthonormal columns (``Q.T @ Q = I``), fixed by ``seed`` (cached; do not modify)."""
    if out_dim < in_dim:
        raise ValueError(
            f"state backbone: hidden_dim={out_dim} is smaller than the state width {in_dim}; "
            f"set backbone.hidden_dim>={in_dim} or lower backbone.object_state_dim / backbone.instruction_dim"
        )
    gaussian = np.random.default_rng(seed).standard_normal((out_dim, in_dim))
    q, r = np.linalg.qr(gaussian)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)[None, :]  # unique sign convention
    return q.astype(np.float32)


class StateBackbone(Backbone):
    """proprio + padded object state + instruction embedding -> fixed orthonormal map to H.

    Args:
        hidden_dim: H (default 512).
        object_state_dim: S, width object states are zero-padded to (0: do not use object state).
        instruction_dim: I, width of the instruction embedding.
        seed: fixes the projection.
    """

    def __init__(
        self,
        hidden_dim: int = 512,
        object_state_dim: int = 128,
        instruction_dim: int = 64,
        seed: int = 0,
    ):
        super().__init__()
        self.hidden_dim = int(hidden_dim)
        self.object_state_dim = int(object_state_dim)
        self.instruction_dim = int(instruction_dim)
        self.seed = int(seed)
        self.input_dim = PROPRIO_DIM + self.object_state_dim + self.instruction_dim
        self.required_obs = (
            ("proprio", "object_state") if self.object_state_dim > 0 else ("proprio",)
        )
        self.backbone_id = f"state-h{self.hidden_dim}-obj{self.object_state_dim}-instr{self.instruction_dim}-seed{self.seed}"
        projection = orthonormal_projection(self.input_dim, self.hidden_dim, self.seed)
        self.register_buffer(
            "projection", torch.from_numpy(projection.copy()), persistent=True
        )  # [H, D]
        self._instruction_cache: dict[str, torch.Tensor] = {}

    def _instruction(self, text: str) -> torch.Tensor:
        if text not in self._instruction_cache:
            self._instruction_cache[text] = torch.from_numpy(
                instruction_embedding(text, self.instruction_dim)
            )
        return self._instruction_cache[text]

    def state_features(self, batch: Mapping) -> torch.Tensor:
        """The un-projected state ``x [B, D]`` (D = 8 + S + I)."""
        size = self.check_batch(batch)
        proprio = as_float_tensor(batch["proprio"]).reshape(size, -1)
        if proprio.shape[1] != PROPRIO_DIM:
            raise ValueError(
                f"state backbone: `proprio` has {proprio.shape[1]} dims, expected {PROPRIO_DIM} "
                "(eef pos 3, eef axis-angle 3, gripper qpos 2); build it with rsdvla.data.libero_demos"
            )
        parts = [proprio]
        if self.object_state_dim > 0:
            objects = as_float_tensor(batch["object_state"]).reshape(size, -1)
            if objects.shape[1] > self.object_state_dim:
                raise ValueError(
                    f"state backbone: `object_state` has {objects.shape[1]} dims but object_state_dim="
                    f"{self.object_state_dim}; set backbone.object_state_dim>={objects.shape[1]}"
                )
            parts.append(
                torch.nn.functional.pad(objects, (0, self.object_state_dim - objects.shape[1]))
            )
        parts.append(torch.stack([self._instruction(str(t)) for t in batch["instruction"]]))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def encode(self, batch: Mapping) -> torch.Tensor:
        """Batch -> ``[B, H]`` float32."""
        features = self.state_features(batch).to(self.projection.device)
        return (features @ self.projection.T).float().cpu()
