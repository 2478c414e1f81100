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

        ``z_hat`` is exactly ``dequantize(codes)`` (so codes alone reproduce it bit for bit);
        gradients reach ``z`` through a straight-through estimator and the scales directly.
        """
        half = (self.levels - 1) / 2
        scales = self.scales.detach()
        residual = z.detach().clone()
        codes = torch.empty(*z.shape, self.num_layers, dtype=torch.long, device=z.device)
        code = torch.empty_like(residual)
        with torch.no_grad():
            for layer in range(self.num_layers):  # in-place ops: no temporaries in the hot loop
                scale = scales[layer]
                torch.div(residual, scale, out=code)
                code.clamp_(-1.0, 1.0).add_(1.0).mul_(half).round_()
                codes[..., layer] = code
                residual.sub_(code.div_(half).sub_(1.0).mul_(scale))
        z_hat = self.dequantize(codes) + (z - z.detach())  # adds an exact 0.0: value unchanged
        return z_hat, codes

    def dequantize(self, codes: torch.Tensor, num_layers: int | None = None) -> torch.Tensor:
        """Codes ``[..., D, L]`` -> latent ``[..., D]`` from the first ``num_layers`` layers."""
        n = self.num_layers if num_layers is None else num_layers
        if not 1 <= n <= self.num_layers:
            raise ValueError(f"num_layers must be in 1..{self.num_layers}, got {n}")
        values = self.codes_to_values(codes)
        scales = self.scales
        z_hat = values[..., 0] * scales[0]
        for layer in range(1, n):
            z_hat = z_hat + values[..., layer] * scales[layer]
        return z_hat
