"""Context draft: heads on the main model's own context state (no second pass over the hidden state).

``ctx[B, d]`` (``MainModel.context(h)``: main's standardizer and input projection, which every
decode computes anyway) ``-> LayerNorm -> [Linear(d, hidden) -> GELU] -> Linear(., k * N * K)
-> logits[B, k, N, K]``. Its cost is two small matrix products: under a tenth of a
main step. It only makes sense with the main checkpoint it was trained on, whose content hash
it records (``hyper_parameters.lineage.teacher``); loading a stack refuses any other main.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ContextDraftConfig:
    context_dim: int = 512  # main's d_model
    hidden: int = 512  # > 0: one GELU layer of this width first; 0: linear heads on the context
    num_draft_layers: int = 3  # k
    tokens_per_layer: int = 128  # N
    levels: int = 7  # K: vocabulary of a token
    tokenizer_family: str = "rfsq"  # rfsq | rvq


class ContextDraft(nn.Module):
    """``forward(ctx[B, d]) -> logits[B, k, N, K]``; ``reads_main_context`` tells decoders to pass main's context."""

    reads_main_context = True

    def __init__(self, config: ContextDraftConfig | None = None, **overrides):
        super().__init__()
        cfg = ContextDraftConfig(**{**(vars(config) if config else {}), **overrides})
        self.config = cfg
        self.norm = nn.LayerNorm(cfg.context_dim)
        width = cfg.hidden or cfg.context_dim
        self.hidden = nn.Linear(cfg.context_dim, cfg.hidden) if cfg.hidden else None
        self.out = nn.Linear(width, cfg.num_draft_layers * cfg.tokens_per_layer * cfg.levels)

    @classmethod
    def from_checkpoint(cls, path, map_location: str = "cpu") -> ContextDraft:
        """Load from a checkpoint written by ``python train.py model=context_draft``."""
        from rsdvla.checkpoints import load_module

        return load_module(
            cls,
            ContextDraftConfig,
            path,
            kind="context_draft",
            prefix="model",
            map_location=map_location,
        )

    @property
    def num_draft_layers(self) -> int:
        return self.config.num_draft_layers

    def forward(self, ctx: torch.Tensor) -> torch.Tensor:
        """``ctx[B, d]`` -> logits ``[B, k, N, K]``."""
        x = self.norm(ctx)
        if self.hidden is not None:
            x = F.gelu(self.hidden(x))
        cfg = self.config
        return self.out(x).view(-1, cfg.num_draft_layers, cfg.tokens_per_layer, cfg.levels)
