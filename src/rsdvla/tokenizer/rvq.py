"""Chunk residual VQ tokenizer: action chunk ``[B, T, A]`` <-> codes ``[B, G, L]`` (DESIGN 2.1b).

The whole chunk is flattened and encoded (MLP) into G latent groups of width ``latent_dim / G``;
each group is quantized by one residual VQ of L layers with codebook size C
(``vector_quantize_pytorch.ResidualVQ``, the groups sharing its codebooks: k-means init, EMA
codebook updates and dead-code replacement come from the library), and an MLP decodes the
summed codebook vectors back to the chunk. A residual layer is therefore G tokens of vocabulary C:
G = 1 is the one-code-per-layer tokenizer of VQ-VLA / MiniVLA, where exact speculative acceptance
of a layer is top-1 agreement on one token.

Training uses the library's quantize dropout (a random prefix of layers per batch), so the
decoder learns to reconstruct from any prefix: ``decode(codes, num_layers=m)`` is the coarse
reconstruction of the first m layers, as with RFSQ.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn
from vector_quantize_pytorch import ResidualVQ

from rsdvla.tokenizer.rfsq import mlp

FIELD = "model.module.tokenizer"


@dataclass
class RVQConfig:
    action_dim: int = 7
    chunk_size: int = 8  # T
    groups: int = 1  # G: tokens per residual layer
    latent_dim: int = 64  # total latent width, split into G groups of latent_dim / G
    num_layers: int = 8  # L
    codebook_size: int = 256  # C: the vocabulary of one token
    hidden: int = 256
    depth: int = 2
    decay: float = 0.95  # EMA decay of the codebooks
    kmeans_init: bool = True
    dead_code_threshold: float = 2.0  # EMA usage below which a code is replaced by a batch vector
    commitment_weight: float = 0.25
    quantize_dropout: bool = True  # train on random layer prefixes (prefix decode)

    family: ClassVar[str] = "rvq"

    @property
    def tokens_per_layer(self) -> int:
        """N = G tokens per residual layer."""
        return self.groups

    @property
    def levels(self) -> int:
        """The vocabulary of one token (C), under the name the models' configs use."""
        return self.codebook_size


def check_rvq_config(cfg: RVQConfig) -> None:
    """One-line refusals of settings the latent cannot hold (named by their config field)."""
    if cfg.groups < 1 or cfg.latent_dim % cfg.groups:
        raise ValueError(
            f"{FIELD}.groups={cfg.groups} must be >= 1 and divide {FIELD}.latent_dim={cfg.latent_dim} "
            "(each group is latent_dim / groups wide); choose groups among the divisors of latent_dim"
        )
    if cfg.codebook_size < 2:
        raise ValueError(f"{FIELD}.codebook_size={cfg.codebook_size} must be >= 2")
    if cfg.num_layers < 1:
        raise ValueError(f"{FIELD}.num_layers={cfg.num_layers} must be >= 1")


class ChunkRVQTokenizer(nn.Module):
    """Residual VQ over a whole action chunk.

    Public API (the tokenizer contract shared with :class:`RFSQTokenizer`):
        encode(actions[B, T, A]) -> LongTensor[B, G, L] in 0..C-1
        decode(codes[B, G, L'], num_layers=None) -> Tensor[B, T, A]
        codes_to_layers(codes[B, G, L]) -> tokens[B, L, G]; layers_to_codes (its inverse)
        tokens_per_layer (G), levels / vocab_size (C), num_layers (L), family ("rvq")
        from_checkpoint(path)
    """

    family = "rvq"

    def __init__(self, config: RVQConfig | None = None, **overrides):
        super().__init__()
        cfg = config or RVQConfig()
        if overrides:
            cfg = RVQConfig(**{**asdict(cfg), **overrides})
        check_rvq_config(cfg)
        self.config = cfg
        flat = cfg.chunk_size * cfg.action_dim
        self.encoder = mlp(flat, cfg.hidden, cfg.latent_dim, cfg.depth)
        self.quantizer = ResidualVQ(
            dim=cfg.latent_dim // cfg.groups,
            num_quantizers=cfg.num_layers,
            codebook_size=cfg.codebook_size,
            decay=cfg.decay,
            kmeans_init=cfg.kmeans_init,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            commitment_weight=cfg.commitment_weight,
            quantize_dropout=cfg.quantize_dropout and cfg.num_layers > 1,
        )
        self.decoder = mlp(cfg.latent_dim, cfg.hidden, flat, cfg.depth)

    # ------------------------------------------------------------------ the contract
    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def levels(self) -> int:
        """C, the vocabulary of one token (``levels`` in the models' configs)."""
        return self.config.codebook_size

    vocab_size = levels

    @property
    def tokens_per_layer(self) -> int:
        """N = G tokens per residual layer."""
        return self.config.groups

    def codes_to_layers(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, G, L]`` -> layer tokens ``[B, L, G]``."""
        return codes.transpose(1, 2)

    def layers_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Layer tokens ``[B, L, G]`` -> codes ``[B, G, L]``."""
        return tokens.transpose(1, 2)

    # ------------------------------------------------------------------ model
    def _latent(self, actions: torch.Tensor) -> torch.Tensor:
        """``actions[B, T, A]`` -> grouped latent ``[B, G, latent_dim / G]``."""
        cfg = self.config
        if actions.ndim != 3 or tuple(actions.shape[1:]) != (cfg.chunk_size, cfg.action_dim):
            raise ValueError(
                f"actions: shape {tuple(actions.shape)} but this tokenizer encodes chunks "
                f"[B, {cfg.chunk_size}, {cfg.action_dim}] ({FIELD}.chunk_size, .action_dim)"
            )
        z = self.encoder(actions.reshape(actions.shape[0], -1))
        return z.view(actions.shape[0], cfg.groups, -1)

    def _actions(self, latent: torch.Tensor) -> torch.Tensor:
        """Grouped latent ``[B, G, d]`` -> actions ``[B, T, A]``."""
        cfg = self.config
        out = self.decoder(latent.reshape(latent.shape[0], -1))
        return out.view(-1, cfg.chunk_size, cfg.action_dim)

    def loss(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``actions[B, T, A]`` -> (reconstruction ``[B, T, A]``, codes ``[B, G, L]``, commitment loss).

        Training: the library's straight-through output (a random layer prefix with quantize
        dropout). Eval: the reconstruction is ``decode(codes)``, so codes alone reproduce it.
        """
        quantized, codes, commit = self.quantizer(self._latent(actions))
        if not self.training:
            return self.decode(codes, validate=False), codes, commit.sum()
        return self._actions(quantized), codes, commit.sum()

    def forward(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``actions[B, T, A]`` -> (reconstruction ``[B, T, A]``, codes ``[B, G, L]``)."""
        recon, codes, _ = self.loss(actions)
        return recon, codes

    @torch.no_grad()
    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized ``actions[B, T, A]`` -> codes ``LongTensor[B, G, L]`` in ``0..C-1``.

        Always the full depth (the library's quantize dropout applies in training mode only).
        """
        was_training = self.training
        self.eval()
        try:
            _, codes, _ = self.quantizer(self._latent(actions))
        finally:
            self.train(was_training)
        return codes

    @torch.no_grad()
    def decode(
        self, codes: torch.Tensor, num_layers: int | None = None, validate: bool = True
    ) -> torch.Tensor:
        """Codes ``[B, G, L']`` (L' >= num_layers) -> actions ``[B, T, A]`` from the first n layers."""
        n = self.num_layers if num_layers is None else int(num_layers)
        if not 1 <= n <= min(self.num_layers, codes.shape[-1]):
            raise ValueError(
                f"num_layers must be in 1..{min(self.num_layers, codes.shape[-1])} (codes have "
                f"{codes.shape[-1]} layers, the tokenizer {self.num_layers}), got {n}"
            )
        if codes.ndim != 3 or codes.shape[1] != self.config.groups:
            raise ValueError(
                f"codes: shape {tuple(codes.shape)} but this tokenizer's codes are [B, "
                f"{self.config.groups}, L] (groups={self.config.groups}); were they produced by "
                "another tokenizer?"
            )
        if validate:
            low, high = torch.aminmax(codes[..., :n])
            if low < 0 or high >= self.levels:
                raise ValueError(
                    f"codes: values must lie in 0..{self.levels - 1}, got {int(low)}..{int(high)}; "
                    "were they produced by a tokenizer with the same `codebook_size`?"
                )
        prefix = codes[..., :n]
        if n < self.num_layers:  # the library reads -1 as a dropped (zero) layer
            prefix = nn.functional.pad(prefix, (0, self.num_layers - n), value=-1)
        return self._actions(self.quantizer.get_output_from_indices(prefix))

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, map_location: str = "cpu"
    ) -> ChunkRVQTokenizer:
        """Load from a checkpoint written by ``python train.py model=tokenizer_rvq``."""
        from rsdvla.checkpoints import load_module
        from rsdvla.tokenizer.family import read_family

        read_family(path, required="rvq")
        return load_module(
            cls, RVQConfig, path, kind="tokenizer", prefix="tokenizer", map_location=map_location
        )
