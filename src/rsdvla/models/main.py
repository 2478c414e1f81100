"""Main model: a causal transformer over residual depth (RQ-Transformer's depth transformer).

Sequence: ``[ctx(h), e(L0), e(L1), ..., e(L_{L-2})]``; position ``i`` outputs logits
``[N, K]`` for residual layer ``i``. Read top to bottom: config, model, decoding API.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rsdvla.models.blocks import Block, CodeEmbedding, InputStandardizer, KVCache, LayerHeads


@dataclass
class MainConfig:
    hidden_dim: int = 4096  # H: backbone hidden width
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    dropout: float = 0.0
    num_code_layers: int = 8  # L: RFSQ residual depth
    tokens_per_layer: int = 128  # N = T * D
    levels: int = 7  # K: vocabulary of a token
    tokenizer_family: str = "rfsq"  # the tokenizer family the codes come from (rfsq | rvq)


class DecodeState:
    """KV caches of an in-progress decode plus the context embedding ``[B, 1, d]``."""

    def __init__(self, ctx: torch.Tensor, caches: list[KVCache]):
        self.ctx = ctx
        self.caches = caches

    @property
    def length(self) -> int:
        """Positions already in the cache (= index of the next layer's input position)."""
        return self.caches[0].length

    def select(self, rows: torch.Tensor) -> DecodeState:
        """The decode of the batch rows ``rows`` (``LongTensor[B']``; e.g. a draft tree's chosen rows)."""
        return DecodeState(self.ctx[rows], [cache.select(rows) for cache in self.caches])

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` positions (drop the rest, e.g. rejected drafted layers)."""
        for cache in self.caches:
            cache.length = min(cache.length, length)


class MainModel(nn.Module):
    """Autoregressive model over RFSQ residual layers conditioned on a backbone hidden state.

    Training: ``forward(h[B, H], tokens[B, L, N]) -> logits[B, L, N, K]`` (teacher forcing).
    Inference: ``start(h) -> state``; ``step(state, prev_codes[B, N] | None) -> logits[B, N, K]``;
    ``verify(h, drafted[B, k, N]) -> logits[B, k+1, N, K]`` in one pass.
    """

    def __init__(self, config: MainConfig | None = None, **overrides):
        super().__init__()
        cfg = MainConfig(**{**(vars(config) if config else {}), **overrides})
        self.config = cfg
        self.input_norm = InputStandardizer(
            cfg.hidden_dim
        )  # fixed statistics of the training split
        self.ctx = nn.Linear(cfg.hidden_dim, cfg.d_model)
        self.embed = CodeEmbedding(cfg.tokens_per_layer, cfg.levels, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.num_code_layers, cfg.d_model))
        self.blocks = nn.ModuleList(
            Block(cfg.d_model, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_layers)
        )
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.heads = LayerHeads(cfg.num_code_layers, cfg.d_model, cfg.tokens_per_layer, cfg.levels)
        nn.init.normal_(self.pos, std=0.02)

    @classmethod
    def from_checkpoint(cls, path, map_location: str = "cpu") -> MainModel:
        """Load from a checkpoint written by ``python train.py model=main``.

        ``action_stats`` (normalization statistics) is attached to the returned model.
        """
        from rsdvla.checkpoints import load_module

        return load_module(
            cls, MainConfig, path, kind="main", prefix="model", map_location=map_location
        )

    # ------------------------------------------------------------------ shared pieces
    def _inputs(
        self, h: torch.Tensor, prefix: torch.Tensor, ctx: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[ctx(h), e(prefix_0), ...]`` with positions: ``[B, 1 + P, d]`` (``ctx[B, 1, d]`` if precomputed)."""
        x = self.context(h).unsqueeze(1) if ctx is None else ctx
        if prefix.shape[1]:
            x = torch.cat([x, self.embed(prefix)], dim=1)
        return x + self.pos[: x.shape[1]]

    def _run(self, x: torch.Tensor, first: int, caches: list[KVCache] | None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, causal=True, cache=None if caches is None else caches[i])
        return self.heads(self.ln_f(x), first=first)

    def _new_caches(self, h: torch.Tensor) -> list[KVCache]:
        cfg = self.config
        hd = cfg.d_model // cfg.n_heads
        like = self.pos.detach()
        return [
            KVCache(h.shape[0], cfg.n_heads, cfg.num_code_layers, hd, like) for _ in self.blocks
        ]

    # ------------------------------------------------------------------ training
    def forward(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: ``h[B, H]``, ``tokens[B, L, N]`` -> logits ``[B, L, N, K]`` for every layer."""
        return self._run(self._inputs(h, tokens[:, :-1]), first=0, caches=None)

    # ------------------------------------------------------------------ inference
    def context(self, h: torch.Tensor) -> torch.Tensor:
        """Main's context state ``[B, d]`` of ``h[B, H]`` (the input of its first position), in
        the model's dtype whatever ``h``'s (a bf16 model standardizes ``h`` in float32 first)."""
        return self.ctx(self.input_norm(h, self.ctx.weight.dtype))

    @torch.no_grad()
    def start(self, h: torch.Tensor) -> DecodeState:
        """Begin decoding from ``h[B, H]``: the first ``step(state, None)`` predicts layer 0."""
        return DecodeState(self.context(h).unsqueeze(1), self._new_caches(h))

    @torch.no_grad()
    def step(self, state: DecodeState, prev_codes: torch.Tensor | None) -> torch.Tensor:
        """One position: ``prev_codes[B, N]`` of layer ``i-1`` (None for i=0) -> logits ``[B, N, K]`` of layer i."""
        i = state.length
        if i >= self.config.num_code_layers:
            raise ValueError(f"all {self.config.num_code_layers} layers are decoded already")
        x = state.ctx if prev_codes is None else self.embed(prev_codes.unsqueeze(1))
        x = x + self.pos[i]
        return self._run(x, first=i, caches=state.caches)[:, 0]

    @torch.no_grad()
    def verify(
        self,
        h: torch.Tensor,
        drafted: torch.Tensor,
        return_state: bool = False,
        state: DecodeState | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, DecodeState]:
        """One pass over ``[ctx(h), e(drafted_0..k-1)]``: ``drafted[B, k, N]`` -> logits ``[B, k+1, N, K]``.

        Position j's logits are main's prediction for layer j given drafted layers ``0..j-1``.
        With ``return_state`` the filled KV cache comes back too, so decoding can continue
        after ``state.truncate(accepted + 1)``. ``state``: a fresh ``start(h)`` whose context is
        reused (a context draft already computed it); implies ``return_state``.
        """
        if state is not None:
            if state.length:
                raise ValueError("verify needs a fresh state from start(h) (nothing cached yet)")
            return_state = True
        k = drafted.shape[1]
        if not 0 <= k < self.config.num_code_layers:
            raise ValueError(
                f"drafted layers k must be in 0..{self.config.num_code_layers - 1}, got {k}"
            )
        if state is None and return_state:
            state = self.start(h)
        x = self._inputs(h, drafted, ctx=state.ctx if state else None)
        logits = self._run(x, first=0, caches=state.caches if state else None)
        return (logits, state) if return_state else logits
