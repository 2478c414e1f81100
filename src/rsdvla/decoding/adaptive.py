"""Adaptive-depth main-only decoding: stop when another layer no longer moves the action.

Rule (knob ``epsilon``, normalized action units): after main decodes layer j (j >= ``min_depth``
- 1), the tokenizer decodes the prefix ``0..j``; a sample stops once the layer it just added
changed its action chunk by at most ``epsilon`` (largest absolute change over the chunk's T x A
entries); it keeps that layer. Layer 0 has no predecessor, so the shallowest stop is
``max(min_depth, 2)`` layers. The tokenizer's partial decodes are part of the rule's cost and are
timed with the main steps. RFSQ's residual layers shrink in scale, so a layer that moved the action by less than
epsilon predicts that the rest move it less still. The decoder steps on while any sample of the
batch is still active (one host read per layer: the price of stopping early); a stopped
sample keeps the chunk decoded at its own depth.
"""

from __future__ import annotations

import torch
from torch import nn

from rsdvla.decoding.compat import check_main_tokenizer
from rsdvla.decoding.main_loop import argmax_tokens, new_layers
from rsdvla.decoding.main_only import check_depth
from rsdvla.decoding.stats import DecodeResult, DecodeStats, StageTimer


class AdaptiveDepthDecoder:
    """Greedy main-only decoding to a per-sample depth chosen by the action-change rule above.

    Args:
        main, tokenizer: as for ``MainOnlyDecoder``.
        epsilon: stop once a layer moved the action chunk by <= epsilon (>= 0; 0 stops only on
            layers that change nothing).
        min_depth: decode at least this many layers (1..L).
        max_depth: decode at most this many layers (min_depth..L; None: L).
        depth: the truncated depth of the other decoders (``decoder.depth``): caps ``max_depth``.

    Returns codes ``[B, T, D, max_depth]`` (layers past a sample's depth are main's continuation
    for batch-mates, ignored by its actions), actions at each sample's depth, and
    ``stats.decoded_layers[B]``.
    """

    needs_draft = False

    def __init__(
        self,
        main: nn.Module,
        tokenizer: nn.Module,
        epsilon: float = 0.01,
        min_depth: int = 1,
        max_depth: int | None = None,
        draft: nn.Module | None = None,
        depth: int | None = None,
    ):
        check_main_tokenizer(main, tokenizer)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or epsilon < 0:
            raise ValueError(
                f"decoder.epsilon={epsilon!r} must be a number >= 0 (normalized action units); "
                "fix it in conf/decoder/adaptive_depth.yaml or on the command line"
            )
        self.main, self.tokenizer = main.eval(), tokenizer.eval()
        self.num_layers = main.config.num_code_layers
        conf = "conf/decoder/adaptive_depth.yaml"
        self.max_depth = min(
            check_depth(max_depth, self.num_layers, "decoder.max_depth", conf),
            check_depth(depth, self.num_layers, "decoder.depth", conf),
        )
        if (
            not isinstance(min_depth, bool)
            and isinstance(min_depth, int)
            and min_depth > self.max_depth
        ):
            raise ValueError(
                f"decoder.min_depth={min_depth} must be <= decoder.max_depth={self.max_depth} (main decodes "
                f"L={self.num_layers} layers; decoder.depth caps max_depth); lower decoder.min_depth or "
                f"raise decoder.max_depth ({conf})"
            )
        self.min_depth = check_depth(min_depth, self.max_depth, "decoder.min_depth", conf)
        self.epsilon = float(epsilon)
        self.tokens_per_layer = main.config.tokens_per_layer

    @torch.inference_mode()
    def __call__(self, h: torch.Tensor) -> DecodeResult:
        timer = StageTimer(h.device)
        b = h.shape[0]
        layers = new_layers(b, self.max_depth, self.tokens_per_layer, h.device)
        depth = torch.full((b,), self.max_depth, dtype=torch.long, device=h.device)
        active = torch.ones(b, dtype=torch.bool, device=h.device)
        state, actions, steps = self.main.start(h), None, 0
        for j in range(self.max_depth):
            layers[:, j] = argmax_tokens(
                self.main.step(state, None if j == 0 else layers[:, j - 1])
            )
            steps += 1
            if j + 1 < self.min_depth:
                continue
            codes = self.tokenizer.layers_to_codes(layers[:, : j + 1])
            now = self.tokenizer.decode(codes, num_layers=j + 1, validate=False)
            if actions is None:
                actions = now
            else:
                change = (now - actions).flatten(1).abs().amax(1)
                actions = torch.where(active[:, None, None], now, actions)
                stop = active & (change <= self.epsilon)
                depth = torch.where(stop, torch.full_like(depth, j + 1), depth)
                active = active & ~stop
            if j + 1 < self.max_depth and not bool(active.any()):  # one host read per layer
                break
        timer.lap("main_steps")
        stats = DecodeStats.not_speculated(b, h.device, steps, timer, decoded_layers=depth)
        codes = self.tokenizer.layers_to_codes(layers[:, :steps])
        return DecodeResult(codes=codes, actions=actions, stats=stats)

    def __repr__(self) -> str:
        return (
            f"AdaptiveDepthDecoder(epsilon={self.epsilon}, min_depth={self.min_depth}, "
            f"max_depth={self.max_depth})"
        )
