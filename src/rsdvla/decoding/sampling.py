"""Token choice from logits: greedy argmax or temperature sampling (exponential race, no host sync).

Random draws come from a *noise source*: :class:`GeneratorCache` (one private generator per
device, drawn from in call order: a batch shares one stream) or :class:`RowNoise` (one stream
per row and per draw: row b's draw for (call, tag, layer) is seeded from its own episode seed,
so a row samples the same tokens whoever shares its batch and whatever other rows draw).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DRAW_TAGS = {"propose": 1, "judge": 2, "replace": 3, "bonus": 4, "choose": 5}
"""What a draw is for: part of a :class:`RowNoise` draw's seed, so draws never share a stream."""


def mix_seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's ``SeedSequence``)."""
    mixed = np.random.SeedSequence([int(p) % 2**63 for p in parts])
    return int(mixed.generate_state(1, dtype=np.uint64)[0] % 2**63)


def sample_from_probs(
    probs: torch.Tensor, noise=None, tag: str = "choose", layer: int = 0
) -> torch.Tensor:
    """Draw one index per row of unnormalized ``probs[..., K]`` (>= 0): ``LongTensor[...]``.

    ``argmax(p_i / E_i)`` with ``E_i ~ Exp(1)`` picks i with probability ``p_i / sum(p)``; rows need
    not be normalized and an all-zero row returns 0 instead of raising (callers never use it).
    ``noise``: a noise source (None: torch's global RNG); ``tag``/``layer`` name the draw.
    """
    source = noise if noise is not None else GeneratorCache(None)
    return (probs / source.exponential_like(probs, tag, layer)).argmax(-1)


def choose_tokens(
    logits: torch.Tensor, temperature: float, noise=None, layer: int = 0, tag: str = "choose"
) -> torch.Tensor:
    """``logits[..., K]`` -> ``LongTensor[...]``: argmax if ``temperature == 0`` else a sample of softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(-1)
    return sample_from_probs(torch.softmax(logits / temperature, dim=-1), noise, tag, layer)


class GeneratorCache:
    """One ``torch.Generator`` per device, seeded once (``seed=None``: use torch's global RNG).

    Draws are taken in call order from the one stream: a batch's rows share it (the offline
    evaluation's batches). Per-episode, batch-independent draws are :class:`RowNoise`'s.
    """

    def __init__(self, seed: int | None):
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def get(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(self.seed))
            self._generators[device] = gen
        return gen

    def exponential_like(self, like: torch.Tensor, tag: str = "", layer: int = 0) -> torch.Tensor:
        """``Exp(1)`` noise of ``like``'s shape, the next draws of the stream."""
        return torch.empty_like(like).exponential_(generator=self.get(like.device))

    def rand(self, shape, device, tag: str = "", layer: int = 0) -> torch.Tensor:
        """``U[0, 1)`` noise of ``shape``, the next draws of the stream."""
        return torch.rand(shape, device=device, generator=self.get(torch.device(device)))


class RowNoise:
    """Counter-based noise for a batch of rows, each from its own episode's seed.

    ``seeds[b]``: row b's stream seed (the decoder's configured seed mixed with the episode's);
    ``calls[b]``: how many decoder calls row b has made before this one. The draw ``(tag, layer)``
    of row b in this call uses a generator seeded from ``(seeds[b], calls[b], tag, layer)``: it
    does not depend on the other rows nor on which draws the batch needed (an RSD batch runs
    main steps from its *fewest* accepted layer; a row's skipped draws shift nothing).
    """

    def __init__(self, seeds: Sequence[int], calls: Sequence[int]):
        if len(seeds) != len(calls):
            raise ValueError(f"RowNoise: {len(seeds)} seeds but {len(calls)} call counts")
        self.seeds = [int(s) for s in seeds]
        self.calls = [int(c) for c in calls]

    def _rows(self, shape, device, tag: str, layer: int, draw) -> torch.Tensor:
        shape = tuple(shape)
        if shape[0] != len(self.seeds):
            raise ValueError(f"RowNoise: a draw of batch {shape[0]} for {len(self.seeds)} rows")
        device = torch.device(device)
        gen = torch.Generator(device=device)
        out = []
        for seed, calls in zip(self.seeds, self.calls, strict=True):
            gen.manual_seed(mix_seed(seed, calls, DRAW_TAGS.get(tag, 0), layer))
            out.append(draw(shape[1:], gen, device))
        return torch.stack(out)

    def exponential_like(self, like: torch.Tensor, tag: str = "", layer: int = 0) -> torch.Tensor:
        return self._rows(
            like.shape,
            like.device,
            tag,
            layer,
            lambda s, g, d: torch.empty(s, dtype=like.dtype, device=d).exponential_(generator=g),
        )

    def rand(self, shape, device, tag: str = "", layer: int = 0) -> torch.Tensor:
        return self._rows(
            shape, device, tag, layer, lambda s, g, d: torch.rand(s, device=d, generator=g)
        )
