"""Transformer building blocks with a preallocated KV cache (nanoGPT style, pre-LayerNorm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KVCache:
    """Keys and values of one attention layer: ``[B, heads, max_len, head_dim]`` and a fill length."""

    def __init__(self, batch: int, heads: int, max_len: int, head_dim: int, like: torch.Tensor):
        self.k = like.new_empty(batch, heads, max_len, head_dim)
        self.v = like.new_empty(batch, heads, max_len, head_dim)
        self.length = 0

    def select(self, rows: torch.Tensor) -> KVCache:
        """A cache of the batch rows ``rows`` (``LongTensor[B']``), same fill length."""
        out = KVCache.__new__(KVCache)
        out.k, out.v, out.length = self.k[rows], self.v[rows], self.length
        return out

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v [B, heads, s, head_dim]`` after the filled part; return all filled keys/values."""
        end = self.length + k.shape[2]
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, causal: bool, cache: KVCache | None = None) -> torch.Tensor:
        """``x[B, S, d]`` -> ``[B, S, d]``; with a cache, S new positions follow the cached ones.

        With a non-empty cache only S == 1 is supported (one decoding step).
        """
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        is_causal = causal
        if cache is not None:
            if cache.length > 0:
                if s != 1:
                    raise ValueError(
                        "a KV cache that already holds positions takes one new position at a time"
                    )
                is_causal = False  # one query attends to every earlier position
            k, v = cache.append(k, v)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=is_causal and s > 1, dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))``, ``x + mlp(ln(x))``."""

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, mlp_ratio: int = 4):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(
        self, x: torch.Tensor, causal: bool = True, cache: KVCache | None = None
    ) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), causal, cache)
        return x + self.mlp(self.ln2(x))


class LayerHeads(nn.Module):
    """One linear head per residual layer: ``x[B, S, d]`` at layers ``first..first+S-1`` -> logits ``[B, S, N, K]``."""

    def __init__(self, num_layers: int, d_model: int, tokens: int, levels: int):
        super().__init__()
        self.tokens, self.levels = tokens, levels
        self.weight = nn.Parameter(
            torch.randn(num_layers, d_model, tokens * levels) * d_model**-0.5
        )
        self.bias = nn.Parameter(torch.zeros(num_layers, tokens * levels))

    def forward(self, x: torch.Tensor, first: int = 0) -> torch.Tensor:
        b, s, _ = x.shape
        w, bias = self.weight[first : first + s], self.bias[first : first + s]
        if s == 1:
            logits = torch.addmm(bias[0], x[:, 0], w[0]).unsqueeze(1)
        else:
            logits = torch.einsum("bsd,sdo->bso", x, w) + bias
        return logits.view(b, s, self.tokens, self.levels)


class CodeEmbedding(nn.Module):
    """Embeds one residual layer's N codes in ``0..K-1`` into one vector: ``[B, S, N] -> [B, S, d]``."""

    def __init__(self, tokens: int, levels: int, d_model: int):
        super().__init__()
        self.levels = levels
        self.table = nn.Embedding(tokens * levels, d_model)
        self.register_buffer("offsets", torch.arange(tokens) * levels, persistent=False)
        nn.init.normal_(self.table.weight, std=tokens**-0.5 * 0.5)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        lead = codes.shape[:-1]
        flat = (codes + self.offsets).reshape(-1, codes.shape[-1])
        return F.embedding_bag(flat, self.table.weight, mode="sum").view(*lead, -1)


class InputStandardizer(nn.Module):
    """Fixed per-channel standardization of backbone hidden states: ``(h - mean) / std``.

    The statistics are buffers (saved in checkpoints), set once from the training split by
    ``set_statistics``; until then it is the identity. Removing the static part of the hidden
    state matters for low-dimensional state backbones, whose useful variation is small.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("inv_std", torch.ones(dim))

    @torch.no_grad()
    def set_statistics(self, hidden: torch.Tensor, eps: float = 1e-6) -> None:
        """``hidden[N, H]`` from the training split."""
        hidden = hidden.float()
        self.mean.copy_(hidden.mean(0))
        self.inv_std.copy_(1.0 / (hidden.std(0) + eps))

    def _apply(self, fn, recurse=True):
        """Device moves apply; dtype casts do not: the statistics stay float32 in a bf16 model.

        ``h - mean`` in bfloat16 (8 bits of mantissa) would wipe out the small variation around a
        large static part that this standardization exists to expose.
        """
        super()._apply(fn, recurse)
        for name in ("mean", "inv_std"):
            buffer = getattr(self, name)
            if buffer.dtype != torch.float32:
                setattr(self, name, buffer.float())
        return self

    def forward(self, h: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``h[B, H]`` (any float dtype) -> standardized ``[B, H]``, computed in float32 and
        returned in ``dtype`` (the consuming layer's; None: float32)."""
        z = (h.float() - self.mean) * self.inv_std
        return z if dtype is None else z.to(dtype)
