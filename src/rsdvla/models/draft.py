"""Draft model: a cheap one-pass proposal of the coarse residual layers L0..L{k-1}.

``h[B, H] -> standardize -> Linear(H, d) (the trained 4096->512 projection) -> + layer queries
-> one transformer block over the k queries -> one head per layer -> logits[B, k, N, K]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rsdvla.models.blocks import Block, InputStandardizer, LayerHeads


@dataclass
class DraftConfig:
    hidden_dim: int = 4096  # H
    d_model: int = 512
    n_heads: int = 8
    n_layers: int = 1
    num_draft_layers: int = 3  # k
    tokens_per_layer: int = 128  # N
    levels: int = 7  # K: vocabulary of a token
    tokenizer_family: str = "rfsq"  # rfsq | rvq
    dropout: float = 0.0


class DraftModel(nn.Module):
    """``forward(h[B, H]) -> logits[B, k, N, K]``; ``propose(h) -> codes[B, k, N]`` (argmax)."""

    def __init__(self, config: DraftConfig | None = None, **overrides):
        super().__init__()
        cfg = DraftConfig(**{**(vars(config) if config else {}), **overrides})
        self.config = cfg
        self.input_norm = InputStandardizer(
            cfg.hidden_dim
        )  # fixed statistics of the training split
        self.proj = nn.Linear(cfg.hidden_dim, cfg.d_model)  # the trained H -> d projection
        self.queries = nn.Parameter(torch.randn(cfg.num_draft_layers, cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.heads = LayerHeads(cfg.num_draft_layers, cfg.d_model, cfg.tokens_per_layer, cfg.levels)

    @classmethod
    def from_checkpoint(cls, path, map_location: str = "cpu") -> DraftModel:
        """Load from a checkpoint written by ``python train.py model=draft``.

        ``action_stats`` (normalization statistics) is attached to the returned model.
        """
        from rsdvla.checkpoints import load_module

        return load_module(
            cls, DraftConfig, path, kind="draft", prefix="model", map_location=map_location
        )

    @property
    def num_draft_layers(self) -> int:
        return self.config.num_draft_layers

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h[B, H]`` -> logits ``[B, k, N, K]``."""
        x = self.proj(self.input_norm(h, self.proj.weight.dtype)).unsqueeze(1) + self.queries
        for block in self.blocks:
            x = block(x, causal=False)
        return self.heads(self.ln_f(x))

    @torch.no_grad()
    def propose(self, h: torch.Tensor) -> torch.Tensor:
        """Greedy proposal: ``h[B, H]`` -> codes ``[B, k, N]``."""
        return self(h).argmax(-1)
