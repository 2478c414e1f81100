"""Tokenizer metrics: per-layer code usage (torchmetrics)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class CodeUsage(Metric):
    """Histogram of codes per residual layer; ``compute()`` -> (used fraction ``[L]``, perplexity ``[L]``).

    Used fraction = share of the K levels that occur at least once in the layer;
    perplexity = exp(entropy) of the layer's code distribution (K when uniform).
    """

    full_state_update = False

    def __init__(self, num_layers: int, levels: int):
        super().__init__()
        self.levels = levels
        self.add_state("counts", default=torch.zeros(num_layers, levels), dist_reduce_fx="sum")

    def update(self, codes: torch.Tensor) -> None:
        """``codes[..., L]``."""
        flat = codes.reshape(-1, codes.shape[-1])
        for layer in range(flat.shape[1]):
            self.counts[layer] += torch.bincount(flat[:, layer], minlength=self.levels).to(
                self.counts
            )

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.counts / self.counts.sum(1, keepdim=True).clamp_min(1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
        return (self.counts > 0).float().mean(1), entropy.exp()
