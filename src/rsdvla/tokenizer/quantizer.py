"""Residual finite scalar quantization (RFSQ).

Each of ``L`` layers quantizes ``residual / s_l`` to the ``K``-point grid
``{-1, -1 + 2/(K-1), ..., 1}`` and subtracts ``s_l * q`` from the residual. With
``s_l = (K-1)^-l`` the residual after layer ``l`` lies inside layer ``l+1``'s range, so
every layer refines the previous one. The codes alone reproduce the quantized latent:
no per-sample statistics are needed to decode (unlike the seed's "robust" variant).
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualFSQ(nn.Module):
    """Quantize a latent ``z[..., D]`` in ``[-1, 1]`` into codes ``[..., D, L]`` in ``0..K-1``.

    Args:
        num_layers: L, residual depth.
        levels: K, grid points per layer (odd so that 0 is on the grid).
        learn_scales: learn the per-layer scales (stored in the checkpoint) instead of fixing them.
    """

    def __init__(self, num_layers: int = 8, levels: int = 7, learn_scales: bool = False):
        super().__init__()
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        self.num_layers = num_layers
        self.levels = levels
        scales = torch.tensor([(levels - 1.0) ** -layer for layer in range(num_layers)])
        if learn_scales:
            self.log_scales = nn.Parameter(scales.log())
        else:
            self.register_buffer("log_scales", scales.log())

    @property
    def scales(self) -> torch.Tensor:
        """Per-layer scales ``[L]``."""
        return self.log_scales.exp()

    def codes_to_values(self, codes: torch.Tensor) -> torch.Tensor:
        """Grid values in ``[-1, 1]`` for integer codes (any shape)."""
        return codes.to(self.log_scales.dtype) * (2.0 / (self.levels - 1)) - 1.0

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize ``z[..., D]`` -> (``z_hat[..., D]``, ``codes[..., D, L]``).

        ``z_hat`` equals ``dequantize(codes)`` bit for bit (same operations in the same order),
        so codes alone reproduce it; gradients reach ``z`` through a straight-through estimator.
        Codes are stored layer-major and returned as a ``[..., D, L]`` view.
        """
        half = (self.levels - 1) / 2
        step = 2.0 / (self.levels - 1)
        scales = self.scales.detach()
        with (
            torch.no_grad()
        ):  # in-place ops on preallocated buffers: no temporaries in the hot loop
            residual = z.detach().clone()
            codes = torch.empty(self.num_layers, *z.shape, dtype=torch.long, device=z.device)
            value = torch.empty_like(residual)
            z_hat = torch.zeros_like(residual)
            for layer in range(self.num_layers):
                torch.div(residual, scales[layer], out=value)
                value.clamp_(-1.0, 1.0).add_(1.0).mul_(half).round_()
                codes[layer].copy_(value)
                value.mul_(step).sub_(1.0).mul_(scales[layer])  # = codes_to_values(code) * scale
                z_hat.add_(value) if layer else z_hat.copy_(value)
                residual.sub_(value)
        if self.log_scales.requires_grad and torch.is_grad_enabled():
            z_hat = self.dequantize(codes.movedim(0, -1))  # differentiable in the learned scales
        return z_hat + (z - z.detach()), codes.movedim(0, -1)  # adds an exact 0.0: value unchanged

    def dequantize(self, codes: torch.Tensor, num_layers: int | None = None) -> torch.Tensor:
        """Codes ``[..., D, L]`` -> latent ``[..., D]`` from the first ``num_layers`` layers."""
        n = self.num_layers if num_layers is None else num_layers
        if not 1 <= n <= self.num_layers:
            raise ValueError(f"num_layers must be in 1..{self.num_layers}, got {n}")
        scales = self.scales
        z_hat = self.codes_to_values(codes[..., 0]) * scales[0]
        for layer in range(1, n):
            z_hat = z_hat + self.codes_to_values(codes[..., layer]) * scales[layer]
        return z_hat
