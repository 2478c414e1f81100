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
    """One ``torch.Generator`` per device, seeded once (``seed=None``: use torch's global RNG).

    ``reseed(episode)`` restarts every generator from a seed mixed from the configured one and
    ``episode`` (an episode's identity), so a decode sequence does not depend on earlier episodes.
    """

    def __init__(self, seed: int | None):
        self.base_seed = seed
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def reseed(self, episode: int) -> None:
        """Restart from ``mix(configured seed, episode)`` (a no-op when the global RNG is used)."""
        if self.base_seed is None:
            return
        import numpy as np

        mixed = np.random.SeedSequence([int(self.base_seed), int(episode) % 2**63])
        self.seed = int(mixed.generate_state(1, dtype=np.uint64)[0] % 2**63)
        for gen in self._generators.values():
            gen.manual_seed(self.seed)

    def get(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(int(self.seed))
            self._generators[device] = gen
        return gen
