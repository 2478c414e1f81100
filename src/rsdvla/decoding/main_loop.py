"""The one loop of sequential main-model steps over residual depth (main-only, RSD, distillation)."""

from __future__ import annotations

from collections.abc import Callable

import torch


def argmax_tokens(logits: torch.Tensor, layer: int = 0) -> torch.Tensor:
    """Greedy choice: ``logits[B, N, K] -> LongTensor[B, N]`` (``layer``: the layer decoded)."""
    return logits.argmax(-1)


def decode_steps(
    main,
    state,
    layers: torch.Tensor,
    start: int,
    stop: int,
    choose: Callable[[torch.Tensor, int], torch.Tensor] = argmax_tokens,
    fixed_upto: torch.Tensor | None = None,
    fixed_max: int = -1,
) -> torch.Tensor:
    """Fill ``layers[:, start:stop]`` (``[B, L, N]``, in place) with main steps; returns ``layers``.

    ``state`` holds the context and layers ``0..start-1`` in its KV cache (``main.start(h)`` for
    ``start = 0``); the step for layer j reads ``layers[:, j-1]``. A sample b whose layer j is
    already fixed (``j <= fixed_upto[b]``, e.g. accepted drafted layers and the bonus layer of
    RSD) keeps it; ``fixed_max`` (a Python int, ``max_b fixed_upto[b]``) spares the masking
    for layers no sample has fixed. ``choose(logits, j)`` turns layer j's logits into tokens.
    """
    for j in range(start, stop):
        chosen = choose(main.step(state, None if j == 0 else layers[:, j - 1]), j)
        if fixed_upto is None or j > fixed_max:
            layers[:, j] = chosen
        else:
            layers[:, j] = torch.where((fixed_upto < j).unsqueeze(-1), chosen, layers[:, j])
    return layers


def new_layers(batch: int, num_layers: int, tokens: int, device) -> torch.Tensor:
    """An uninitialised ``LongTensor[batch, num_layers, tokens]`` for :func:`decode_steps`."""
    return torch.empty((batch, num_layers, tokens), dtype=torch.long, device=device)
