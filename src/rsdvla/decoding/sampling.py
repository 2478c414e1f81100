"""Token choice from logits: greedy argmax or temperature sampling (exponential race, no host sync)."""

from __future__ import annotations

import torch


def sample_from_probs(
    probs: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one index per row of unnormalized ``probs[..., K]`` (>= 0): ``LongTensor[...]``.

    ``argmax(p_i / E_i)`` with ``E_i ~ Exp(1)`` picks i with probability ``p_i / sum(p)``; rows need
    not be normalized and an all-zero row returns 0 instead of raising (callers never use it).
    """
    noise = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / noise).argmax(-1)


def choose_tokens(
    logits: torch.Tensor, temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``logits[..., K]`` -> ``LongTensor[...]``: argmax if ``temperature == 0`` else a sample of softmax(logits / T)."""
    if temperature == 0:
        return logits.argmax(-1)
    return sample_from_probs(torch.softmax(logits / temperature, dim=-1), generator)


class GeneratorCache:
    """One ``torch.Generator`` per device, seeded once (``seed=None``: use torch's global RNG)."""

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
