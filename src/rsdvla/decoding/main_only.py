"""Main-only decoding: L sequential main-model steps, one per residual layer (the baseline)."""

from __future__ import annotations

import torch
from torch import nn

from rsdvla.decoding.compat import check_main_tokenizer
from rsdvla.decoding.sampling import GeneratorCache, choose_tokens
from rsdvla.decoding.stats import DecodeResult, DecodeStats, StageTimer
from rsdvla.tokenizer import layers_to_codes


class MainOnlyDecoder:
    """Greedy (``temperature=0``) or sampled decoding of all L layers with the main model's KV cache.

    Args:
        main: ``MainModel``.
        tokenizer: ``RFSQTokenizer`` whose layers/levels/tokens match ``main``.
        temperature: 0 for greedy argmax, > 0 to sample each token from ``softmax(logits / T)``.
        seed: seed of a private generator for sampling (None: torch's global RNG).
        draft: ignored (accepted so that every decoder config instantiates with the same arguments).

    ``decoder(h[B, H]) -> DecodeResult(codes[B, T, D, L], actions[B, T, A], stats)``.
    """

    needs_draft = False  # loaders may skip the draft checkpoint

    def __init__(
        self,
        main: nn.Module,
        tokenizer: nn.Module,
        temperature: float = 0.0,
        seed: int | None = None,
        draft: nn.Module | None = None,
    ):
        if temperature < 0:
            raise ValueError(f"decoder.temperature must be >= 0 (0 = greedy), got {temperature}")
        check_main_tokenizer(main, tokenizer)
        self.main = main.eval()
        self.tokenizer = tokenizer.eval()
        self.temperature = float(temperature)
        self._generators = GeneratorCache(seed)
        self.num_layers = main.config.num_code_layers
        self.tokens_per_layer = main.config.tokens_per_layer
        self.chunk_size = tokenizer.config.chunk_size

    @torch.inference_mode()
    def __call__(self, h: torch.Tensor) -> DecodeResult:
        """Decode a batch of hidden states ``h[B, H]``."""
        timer = StageTimer(h.device)
        gen = self._generators.get(h.device)
        b = h.shape[0]
        layers = torch.empty(
            (b, self.num_layers, self.tokens_per_layer), dtype=torch.long, device=h.device
        )
        state = self.main.start(h)
        prev = None
        for j in range(self.num_layers):
            prev = choose_tokens(self.main.step(state, prev), self.temperature, gen)
            layers[:, j] = prev
        timer.lap("main_steps")
        codes = layers_to_codes(layers, self.chunk_size)
        actions = self.tokenizer.decode(codes)
        timer.lap("detokenize")
        stats = DecodeStats(
            accepted_layers=torch.zeros(b, dtype=torch.long, device=h.device),
            layer_accepted=torch.zeros((b, 0), dtype=torch.bool, device=h.device),
            token_agreement=torch.zeros((b, 0), device=h.device),
            num_main_steps=self.num_layers,
            speculated=False,
            seconds=timer.seconds,
        )
        return DecodeResult(codes=codes, actions=actions, stats=stats)

    def __repr__(self) -> str:
        return f"MainOnlyDecoder(temperature={self.temperature})"
