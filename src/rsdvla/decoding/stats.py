"""What every decoder call returns: codes, actions and per-call statistics (DESIGN 2.4)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

STAGES = ("draft", "verify", "main_steps", "detokenize")


@dataclass
class DecodeStats:
    """Statistics of one decoder call over a batch of B chunks.

    Attributes:
        accepted_layers: ``LongTensor[B]`` drafted layers accepted per sample (0 for main-only).
        layer_accepted: ``BoolTensor[B, k]``; ``[b, j]`` is True iff drafted layer j was accepted
            for sample b (a contiguous prefix: ``[b, j]`` implies ``[b, :j]``). ``k = 0`` for main-only.
        token_agreement: ``Tensor[B, k]`` share of the drafted tokens of each layer that main kept
            (matching argmax for greedy rules, accepted tokens for ``sampling``), whether or not the
            layer as a whole was accepted.
        num_main_steps: sequential ``MainModel.step`` calls (main-only: L; RSD: L - 1 - min accepted).
        speculated: False when the call drafted nothing (main-only, or RSD's ``skip_below`` fallback);
            acceptance statistics are meaningful only for calls that speculated.
        seconds: wall time per stage (``draft``, ``verify``, ``main_steps``, ``detokenize``); ``verify``
            includes applying the acceptance rule.
    """

    accepted_layers: torch.Tensor
    layer_accepted: torch.Tensor
    token_agreement: torch.Tensor
    num_main_steps: int
    speculated: bool = True
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def num_drafted_layers(self) -> int:
        return self.layer_accepted.shape[1]


@dataclass
class DecodeResult:
    """``codes[B, T, D, L]`` (LongTensor), normalized ``actions[B, T, A]`` and ``stats``."""

    codes: torch.Tensor
    actions: torch.Tensor
    stats: DecodeStats


class StageTimer:
    """Wall-clock laps between stage boundaries; synchronizes CUDA first so GPU work is counted."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else None
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._last = self._now()

    def _now(self) -> float:
        if self.sync is not None:
            self.sync()
        return time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap (or construction) to ``stage``."""
        now = self._now()
        self.seconds[stage] += now - self._last
        self._last = now
