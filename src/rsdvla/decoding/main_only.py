"""Main-only decoding: sequential main-model steps, one per residual layer (the baseline).

``depth=m`` decodes only the first m layers and the tokenizer decodes that prefix: the
truncated-depth baseline every RSD speedup is compared with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rsdvla.decoding.compat import check_main_tokenizer
from rsdvla.decoding.compile import compile_main
from rsdvla.decoding.main_loop import decode_steps, new_layers
from rsdvla.decoding.rows import RowState, advance, noise_for
from rsdvla.decoding.sampling import GeneratorCache, choose_tokens
from rsdvla.decoding.stats import DecodeResult, DecodeStats, StageTimer


def check_depth(
    depth: int | None,
    num_layers: int,
    field: str = "decoder.depth",
    conf: str = "conf/decoder/main_only.yaml",
) -> int:
    """``depth`` (None: all) as an int in ``1..num_layers``, else one line naming the field."""
    if depth is None:
        return num_layers
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= num_layers:
        raise ValueError(
            f"{field}={depth!r} is out of range: main decodes L={num_layers} layers; "
            f"set {field} to an integer in 1..{num_layers} ({conf}) or null for all"
        )
    return depth


class MainOnlyDecoder:
    """Greedy (``temperature=0``) or sampled decoding of the first ``depth`` layers with main's KV cache.

    Args:
        main: ``MainModel``.
        tokenizer: ``RFSQTokenizer`` whose layers/levels/tokens match ``main``.
        temperature: 0 for greedy argmax, > 0 to sample each token from ``softmax(logits / T)``.
        seed: seed of a private generator for sampling (None: torch's global RNG).
        depth: layers to decode, 1..L (None: all L); the tokenizer decodes that prefix.
        compile: compile main's step (``torch.compile``; CUDA graphs on a GPU), falling back to
            eager with one logged line where compilation is unavailable.
        draft: ignored (accepted so that every decoder config instantiates with the same arguments).

    ``decoder(h[B, H]) -> DecodeResult(codes[B, T, D, depth], actions[B, T, A], stats)``.
    """

    needs_draft = False  # loaders may skip the draft checkpoint
    takes_rows = True  # decoder(h, rows): per-episode sampling streams

    def __init__(
        self,
        main: nn.Module,
        tokenizer: nn.Module,
        temperature: float = 0.0,
        seed: int | None = None,
        depth: int | None = None,
        compile: bool = False,
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
        self.depth = check_depth(depth, self.num_layers)
        self.tokens_per_layer = main.config.tokens_per_layer
        self.compiled = compile_main(main) if compile else False

    def choose(self, logits: torch.Tensor, layer: int = 0, noise=None) -> torch.Tensor:
        return choose_tokens(logits, self.temperature, noise or self._generators, layer)

    @torch.inference_mode()
    def __call__(self, h: torch.Tensor, rows: Sequence[RowState] | None = None) -> DecodeResult:
        """Decode a batch of hidden states ``h[B, H]`` (``rows``: one state per row, see
        ``rsdvla.decoding.rows``; sampled tokens then come from each row's own stream)."""
        timer = StageTimer(h.device)
        b = h.shape[0]
        layers = new_layers(b, self.depth, self.tokens_per_layer, h.device)
        noise = noise_for(self._generators, rows) if self.temperature > 0 else None
        decode_steps(
            self.main,
            self.main.start(h),
            layers,
            0,
            self.depth,
            lambda logits, j: self.choose(logits, j, noise),
        )
        advance(rows)
        timer.lap("main_steps")
        codes = self.tokenizer.layers_to_codes(layers)
        actions = self.tokenizer.decode(codes, num_layers=self.depth, validate=False)
        timer.lap("detokenize")
        decoded = (
            None if self.depth == self.num_layers else torch.full((b,), self.depth, device=h.device)
        )
        stats = DecodeStats.not_speculated(b, h.device, self.depth, timer, decoded)
        return DecodeResult(codes=codes, actions=actions, stats=stats)

    def __repr__(self) -> str:
        depth = "" if self.depth == self.num_layers else f", depth={self.depth}"
        return f"MainOnlyDecoder(temperature={self.temperature}{depth})"
