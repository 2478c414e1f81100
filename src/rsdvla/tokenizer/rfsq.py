"""RFSQ action tokenizer: action chunk ``[B, T, A]`` <-> codes ``[B, T, D, L]``.

encoder MLP (per timestep) -> tanh latent ``[B, T, D]`` -> ResidualFSQ -> decoder MLP.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from rsdvla.tokenizer.quantizer import ResidualFSQ


@dataclass
class TokenizerConfig:
    action_dim: int = 7
    chunk_size: int = 8
    latent_dim: int = 16
    num_layers: int = 8
    levels: int = 7
    hidden: int = 64
    depth: int = 2
    learn_scales: bool = False

    family: ClassVar[str] = "rfsq"

    @property
    def tokens_per_layer(self) -> int:
        """N = T * D tokens per residual layer."""
        return self.chunk_size * self.latent_dim


def mlp(d_in: int, hidden: int, d_out: int, depth: int) -> nn.Sequential:
    """``depth`` x (Linear, GELU) of width ``hidden``, then a Linear to ``d_out``: ``[.., d_in] -> [.., d_out]``."""
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.GELU()]
        d = hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class RFSQTokenizer(nn.Module):
    """Residual FSQ tokenizer for normalized action chunks.

    Public API (DESIGN 2.1; the contract shared with :class:`ChunkRVQTokenizer`):
        encode(actions[B, T, A]) -> LongTensor[B, T, D, L]
        decode(codes[B, T, D, L], num_layers=None) -> Tensor[B, T, A]
        codes_to_layers(codes[B, T, D, L]) -> tokens[B, L, T*D]; layers_to_codes (its inverse)
        tokens_per_layer (T*D), levels / vocab_size (K), num_layers (L), family ("rfsq")
        from_checkpoint(path) -> RFSQTokenizer
    """

    family = "rfsq"

    def __init__(self, config: TokenizerConfig | None = None, **overrides):
        super().__init__()
        cfg = config or TokenizerConfig()
        if overrides:
            cfg = TokenizerConfig(**{**asdict(cfg), **overrides})
        self.config = cfg
        self.encoder = mlp(cfg.action_dim, cfg.hidden, cfg.latent_dim, cfg.depth)
        self.quantizer = ResidualFSQ(cfg.num_layers, cfg.levels, cfg.learn_scales)
        self.decoder = mlp(cfg.latent_dim, cfg.hidden, cfg.action_dim, cfg.depth)

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    @property
    def levels(self) -> int:
        return self.config.levels

    vocab_size = levels

    @property
    def tokens_per_layer(self) -> int:
        """N = T * D tokens per residual layer."""
        return self.config.tokens_per_layer

    def codes_to_layers(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, T, D, L]`` -> layer tokens ``[B, L, T*D]``."""
        return codes_to_layers(codes)

    def layers_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Layer tokens ``[B, L, T*D]`` -> codes ``[B, T, D, L]``."""
        return layers_to_codes(tokens, self.config.chunk_size)

    def loss(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``actions[B, T, A]`` -> (reconstruction, codes, auxiliary loss: 0 for RFSQ)."""
        recon, codes = self(actions)
        return recon, codes, recon.new_zeros(())

    def forward(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``actions[B, T, A]`` -> (reconstruction ``[B, T, A]``, codes ``[B, T, D, L]``)."""
        z = torch.tanh(self.encoder(actions))
        z_hat, codes = self.quantizer(z)
        return self.decoder(z_hat), codes

    @torch.no_grad()
    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """Normalized ``actions[B, T, A]`` -> codes ``LongTensor[B, T, D, L]`` in ``0..K-1``."""
        _, codes = self.quantizer(torch.tanh(self.encoder(actions)))
        return codes

    @torch.no_grad()
    def decode(
        self, codes: torch.Tensor, num_layers: int | None = None, validate: bool = True
    ) -> torch.Tensor:
        """Codes ``[B, T, D, L']`` (L' >= num_layers) -> actions ``[B, T, A]``.

        ``num_layers=n`` decodes from the first n layers only (the coarse reconstruction).
        ``validate=False`` skips the code range check (a host sync on a GPU) for codes that are
        an argmax over ``levels`` by construction (the decoders).
        """
        if not validate:
            return self.decoder(self.quantizer.dequantize(codes, num_layers))
        # encode() returns a [..., D, L] view of layer-major memory: check it in memory order (20x faster)
        layer_major = codes.movedim(-1, 0)
        low, high = torch.aminmax(layer_major if layer_major.is_contiguous() else codes)
        if low < 0 or high >= self.levels:
            raise ValueError(
                f"codes: values must lie in 0..{self.levels - 1}, got {int(low)}..{int(high)}; "
                "were they produced by a tokenizer with the same `levels`?"
            )
        return self.decoder(self.quantizer.dequantize(codes, num_layers))

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, map_location: str = "cpu") -> RFSQTokenizer:
        """Load from a checkpoint written by ``python train.py model=tokenizer``."""
        from rsdvla.checkpoints import load_module
        from rsdvla.tokenizer.family import read_family

        read_family(path, required="rfsq")
        return load_module(
            cls,
            TokenizerConfig,
            path,
            kind="tokenizer",
            prefix="tokenizer",
            map_location=map_location,
        )


def codes_to_layers(codes: torch.Tensor) -> torch.Tensor:
    """Codes ``[B, T, D, L]`` -> layer tokens ``[B, L, T*D]`` (token ``n = t*D + d``)."""
    b, t, d, layers = codes.shape
    return codes.permute(0, 3, 1, 2).reshape(b, layers, t * d)


def layers_to_codes(tokens: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """Layer tokens ``[B, L, T*D]`` -> codes ``[B, T, D, L]``."""
    b, layers, n = tokens.shape
    return tokens.reshape(b, layers, chunk_size, n // chunk_size).permute(0, 2, 3, 1)
