"""Acceptance rules of residual speculative decoding (config group ``decoder/acceptance``).

A rule sees the k drafted layers and main's verify logits and returns, per sample and
drafted layer, whether the layer passes; the decoder turns that into a contiguous accepted
prefix. It also returns main's own choice for every verify position (the "bonus" layer used
at the first rejected position, or at position k when all k are accepted) and chooses the
tokens of the remaining main steps (greedy, or sampled for ``sampling``).

Shapes: ``drafted[B, k, N]``, ``draft_logits[B, k, N, K]``, ``main_logits[B, k+1, N, K]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from rsdvla.decoding.rows import noise_for
from rsdvla.decoding.sampling import GeneratorCache, choose_tokens, sample_from_probs


@dataclass
class Judgement:
    """``passed[B, k]`` (bool, before the prefix rule), ``bonus[B, k+1, N]``, ``token_agreement[B, k]``.

    ``corrected``: True when an accepted layer keeps main's tokens from the verify pass (``bonus``)
    instead of the drafted ones (``agreement_corrected``).
    """

    passed: torch.Tensor
    bonus: torch.Tensor
    token_agreement: torch.Tensor
    corrected: bool = False


class AcceptanceRule:
    """Base: greedy proposals and main steps; subclasses decide ``passed`` from the token matches."""

    name = "base"
    temperature = 0.0

    def noise(self, rows=None):
        """The noise source of one call (``rows``: per-row states, see ``rsdvla.decoding.rows``);
        None for greedy rules, which draw nothing."""
        generators = getattr(self, "_generators", None)
        return None if generators is None else noise_for(generators, rows)

    def propose(self, draft_logits: torch.Tensor, noise=None) -> torch.Tensor:
        """Drafted codes from draft logits: ``[B, k, N, K] -> [B, k, N]`` (argmax)."""
        return draft_logits.argmax(-1)

    def choose(self, logits: torch.Tensor, layer: int = 0, noise=None) -> torch.Tensor:
        """Main's tokens for layer ``layer`` decoded by a main step: ``[B, N, K] -> [B, N]``."""
        return logits.argmax(-1)

    def judge(self, drafted, draft_logits, main_logits, tokenizer, noise=None) -> Judgement:
        main_choice = main_logits.argmax(-1)  # [B, k+1, N]
        match = drafted == main_choice[:, :-1]
        passed = self.passes(match, drafted, main_choice, tokenizer)
        return Judgement(passed=passed, bonus=main_choice, token_agreement=match.float().mean(-1))

    def passes(
        self, match, drafted, main_choice, tokenizer
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class ExactAcceptance(AcceptanceRule):
    """A drafted layer is accepted iff all its N tokens equal main's argmax (output = main-only greedy)."""

    name = "exact"

    def passes(self, match, drafted, main_choice, tokenizer):
        return match.all(-1)


def layer_thresholds(threshold, field: str = "decoder.acceptance.threshold") -> tuple[float, ...]:
    """One threshold or one per drafted layer -> a tuple of floats in [0, 1] (else one line naming the field)."""
    is_list = isinstance(threshold, Sequence) and not isinstance(threshold, str)
    values = list(threshold) if is_list else [threshold]
    if not values:
        raise ValueError(
            f"{field} is an empty list; give one value in [0, 1] or one per drafted layer"
        )
    for value in values:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0.0 <= value <= 1.0
        ):
            raise ValueError(
                f"{field} must be in [0, 1] (a share of a layer's tokens), got {threshold!r}; "
                "fix it in conf/decoder/acceptance/ or on the command line"
            )
    return tuple(float(v) for v in values)


class AgreementAcceptance(AcceptanceRule):
    """Accepted iff the share of tokens equal to main's argmax is >= ``threshold``; keeps the drafted codes.

    ``threshold``: one value in [0, 1], or one per drafted layer (a list at least k long; layer j
    uses entry j).
    """

    name = "agreement"

    def __init__(self, threshold: float | list[float] = 0.7):
        values = layer_thresholds(threshold)
        self.threshold = values[0] if len(values) == 1 else list(values)
        self._per_layer = values

    def thresholds(self, k: int, device) -> torch.Tensor:
        """``Tensor[k]`` of the thresholds of drafted layers 0..k-1."""
        if len(self._per_layer) == 1:
            return torch.full((k,), self._per_layer[0], device=device)
        if len(self._per_layer) < k:
            raise ValueError(
                f"decoder.acceptance.threshold has {len(self._per_layer)} per-layer values but the "
                f"decoder drafts k={k} layers; give one value or at least {k}"
            )
        return torch.tensor(self._per_layer[:k], device=device)

    def passes(self, match, drafted, main_choice, tokenizer):
        agreement = match.float().mean(-1)  # [B, k]
        return agreement >= self.thresholds(agreement.shape[1], agreement.device)


class CorrectedAgreementAcceptance(AgreementAcceptance):
    """As ``agreement``, but an accepted layer's disagreeing tokens are replaced by main's own.

    Main's choice for every drafted position is already in the verify pass, so the correction is
    free: the output's layers ``0..a`` are all main's argmax at their position. It differs from
    main-only greedy only through conditioning: main's choice for layer j (and every later main
    step) was computed given the *drafted* layers ``0..j-1``, not main's own, so deeper layers
    can drift. With ``threshold=1`` it is ``exact``. The offline evaluation reports that drift
    as the action error against main-only.
    """

    name = "agreement_corrected"

    def judge(self, drafted, draft_logits, main_logits, tokenizer, noise=None) -> Judgement:
        judged = super().judge(drafted, draft_logits, main_logits, tokenizer)
        judged.corrected = True
        return judged


class ActionDistanceAcceptance(AcceptanceRule):
    """Accepted iff the drafted layer moves the decoded action chunk by <= ``epsilon`` (normalized units).

    For drafted layer j both chunks are decoded from layers ``0..j`` (``tokenizer.decode(codes,
    num_layers=j+1)``) with the same drafted prefix ``0..j-1``: one with the drafted layer j, one
    with main's argmax layer j. ``norm="max"``: the largest absolute difference over the chunk's
    ``T x A`` entries; ``norm="l2"``: the Euclidean norm of the whole ``[T, A]`` difference.
    """

    name = "action_distance"
    NORMS = ("max", "l2")

    def __init__(self, epsilon: float = 0.02, norm: str = "max"):
        if epsilon < 0:
            raise ValueError(f"decoder.acceptance.epsilon must be >= 0, got {epsilon}")
        if norm not in self.NORMS:
            raise ValueError(f"decoder.acceptance.norm must be one of {self.NORMS}, got {norm!r}")
        self.epsilon = float(epsilon)
        self.norm = norm

    def distances(
        self, drafted: torch.Tensor, main_choice: torch.Tensor, tokenizer: nn.Module
    ) -> torch.Tensor:
        """``Tensor[B, k]``: action change caused by each drafted layer vs main's choice for it."""
        b, k, _ = drafted.shape
        drafted_codes = tokenizer.layers_to_codes(drafted)  # [B, ..., k] (RFSQ: [B, T, D, k])
        main_codes = tokenizer.layers_to_codes(main_choice[:, :k])
        out = drafted.new_empty((b, k), dtype=torch.float32)
        for j in range(k):  # k <= L-1 partial decodes, each batched over samples and both variants
            with_main = torch.cat([drafted_codes[..., :j], main_codes[..., j : j + 1]], dim=-1)
            both = tokenizer.decode(
                torch.cat([drafted_codes[..., : j + 1], with_main]), num_layers=j + 1
            )
            diff = (both[:b] - both[b:]).flatten(1)
            out[:, j] = diff.abs().amax(1) if self.norm == "max" else diff.norm(dim=1)
        return out

    def passes(self, match, drafted, main_choice, tokenizer):
        return self.distances(drafted, main_choice, tokenizer) <= self.epsilon


class SamplingAcceptance(AcceptanceRule):
    """Per-token speculative sampling at ``temperature`` > 0 (exact in distribution).

    The draft samples its tokens from ``q = softmax(draft_logits / T)``; token x of drafted layer
    j is kept with probability ``min(1, p(x) / q(x))`` where ``p = softmax(main_logits_j / T)``,
    otherwise replaced by a sample of ``norm(max(0, p - q))``. A layer with any replaced token ends
    the accepted prefix and, with its kept and replaced tokens, is the bonus layer. When all k
    layers pass, the bonus layer k is sampled from p. Main steps sample from ``softmax(logits / T)``.
    ``seed``: a private generator per device (None: torch's global RNG); with per-row states
    (``rsdvla.decoding.rows``) each row draws from its own stream seeded from ``seed`` and the
    row's episode seed, so a row samples the same tokens whichever rows share its batch.
    """

    name = "sampling"

    def __init__(self, temperature: float = 1.0, seed: int | None = None):
        if not temperature > 0:
            raise ValueError(
                f"decoder.acceptance.temperature must be > 0 for sampling, got {temperature}; use exact for greedy"
            )
        self.temperature = float(temperature)
        self.seed = seed
        self._generators = GeneratorCache(seed)

    def propose(self, draft_logits, noise=None):
        noise = noise if noise is not None else self._generators
        return choose_tokens(draft_logits, self.temperature, noise, tag="propose")

    def choose(self, logits, layer: int = 0, noise=None):
        noise = noise if noise is not None else self._generators
        return choose_tokens(logits, self.temperature, noise, layer)

    def judge(self, drafted, draft_logits, main_logits, tokenizer, noise=None) -> Judgement:
        noise = noise if noise is not None else self._generators
        k = drafted.shape[1]
        p = torch.softmax(main_logits.float() / self.temperature, dim=-1)  # [B, k+1, N, K]
        q = torch.softmax(draft_logits.float() / self.temperature, dim=-1)  # [B, k, N, K]
        index = drafted.unsqueeze(-1)
        p_x = p[:, :k].gather(-1, index).squeeze(-1)
        q_x = q.gather(-1, index).squeeze(-1)
        u = noise.rand(p_x.shape, p_x.device, "judge")
        kept = u * q_x < p_x  # accept with probability min(1, p/q)
        replacement = sample_from_probs((p[:, :k] - q).clamp_min(0.0), noise, "replace")
        bonus = torch.cat(
            [torch.where(kept, drafted, replacement), sample_from_probs(p[:, k:], noise, "bonus")],
            dim=1,
        )
        return Judgement(passed=kept.all(-1), bonus=bonus, token_agreement=kept.float().mean(-1))
