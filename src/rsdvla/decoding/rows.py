"""Per-row decoder state: what one episode carries from one decoder call to the next.

A decoder that keeps state between calls (the ``sampling`` rule's random stream, RSD's
``skip_below`` average) takes ``decoder(h[B, H], rows)`` with one :class:`RowState` per row of
``h``: each row uses and updates only its own state, so an episode decodes the same whichever
episodes share its batch (``rows=None``: one state for the whole batch, the offline evaluation's
batches). Decoders without state between calls (greedy main-only, adaptive depth, draft-only)
take ``decoder(h)``; :func:`call_decoder` is the one place that tells them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rsdvla.decoding.sampling import GeneratorCache, RowNoise, mix_seed


@dataclass
class RowState:
    """One episode's decoder state.

    ``episode_seed``: the episode's seed (``evaluation.libero.rollout.seed_episode``); ``calls``: decoder calls
    this row has joined; ``accepted_ema`` / ``calls_skipped``: RSD's ``skip_below`` average and
    probe counter (None until the decoder first sees the row).
    """

    episode_seed: int = 0
    calls: int = 0
    accepted_ema: float | None = None
    calls_skipped: int = 0


def takes_rows(decoder) -> bool:
    """Whether ``decoder`` keeps per-row state (``decoder(h, rows)``)."""
    return bool(getattr(decoder, "takes_rows", False))


def call_decoder(decoder, h: torch.Tensor, rows: Sequence[RowState] | None):
    """``decoder(h, rows)`` for decoders with per-row state, else ``decoder(h)``."""
    if rows is not None and takes_rows(decoder):
        if len(rows) != h.shape[0]:
            raise ValueError(f"{len(rows)} row states for a batch of {h.shape[0]} hidden states")
        return decoder(h, rows)
    return decoder(h)


def noise_for(generators: GeneratorCache, rows: Sequence[RowState] | None):
    """The noise source of one call: per-row streams (seeded from the decoder's seed and each row's
    episode seed) when rows are given and the decoder has a seed; else the shared generator
    (``seed=None``: torch's global RNG, which no per-row guarantee can cover)."""
    if rows is None or generators.seed is None:
        return generators
    return RowNoise(
        [mix_seed(generators.seed, row.episode_seed) for row in rows], [row.calls for row in rows]
    )


def advance(rows: Sequence[RowState] | None) -> None:
    """Count one decoder call for every row (called once, at the end of a decoder call)."""
    for row in rows or ():
        row.calls += 1
