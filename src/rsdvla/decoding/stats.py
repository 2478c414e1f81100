"""What every decoder call returns (codes, actions, per-call statistics) and its stage timer.

Timing never adds a host synchronisation inside a decoder call: on a CUDA device the stage
boundaries are CUDA events, read (and waited for) only when ``stats.seconds`` is first accessed,
which callers do after the call. Whole calls are timed by ``rsdvla.decoding.timing`` (policy,
offline evaluation, benchmarks), which synchronises once before and once after each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

STAGES = ("draft", "verify", "main_steps", "detokenize")


class DecodeStats:
    """Statistics of one decoder call over a batch of B chunks.

    Attributes:
        accepted_layers: ``LongTensor[B]`` drafted layers accepted per sample (0 for main-only).
        layer_accepted: ``BoolTensor[B, k]``; ``[b, j]`` is True iff drafted layer j was accepted
            for sample b (a contiguous prefix: ``[b, j]`` implies ``[b, :j]``). ``k = 0`` for main-only.
        token_agreement: ``Tensor[B, k]`` share of the drafted tokens of each layer that main kept
            (matching argmax for greedy rules, accepted tokens for ``sampling``), whether or not the
            layer as a whole was accepted.
        num_main_steps: sequential ``MainModel.step`` calls (main-only: its depth; RSD: L - 1 - min accepted).
        speculated: False when the call drafted nothing (main-only, or RSD's ``skip_below`` fallback);
            acceptance statistics are meaningful only for calls that speculated. A ``BoolTensor[B]``
            when rows with their own ``skip_below`` state split the batch (:func:`merge_row_results`).
        decoded_layers: ``LongTensor[B]`` residual layers the tokenizer decoded per sample (None: all L).
        seconds: wall time per stage (``draft``, ``verify``, ``main_steps``, ``detokenize``); ``verify``
            includes applying the acceptance rule. On CUDA it is resolved from events on first access.
    """

    def __init__(
        self,
        accepted_layers,
        layer_accepted,
        token_agreement,
        num_main_steps,
        speculated=True,
        seconds=None,
        decoded_layers=None,
        timer=None,
    ):
        self.accepted_layers = accepted_layers
        self.layer_accepted = layer_accepted
        self.token_agreement = token_agreement
        self.num_main_steps = num_main_steps
        self.speculated = speculated
        self.decoded_layers = decoded_layers
        self.timer = timer
        self._seconds = None if seconds is None else dict(seconds)

    @classmethod
    def not_speculated(
        cls,
        batch: int,
        device,
        num_main_steps: int,
        timer: StageTimer | None = None,
        decoded_layers: torch.Tensor | None = None,
        num_drafted_layers: int = 0,
    ) -> DecodeStats:
        """Stats of a call that drafted nothing (main-only, adaptive depth, draft-only, RSD's
        ``skip_below`` fallback): no layer accepted, ``layer_accepted``/``token_agreement`` of
        shape ``[batch, num_drafted_layers]`` all zero, ``speculated=False``."""
        return cls(
            accepted_layers=torch.zeros(batch, dtype=torch.long, device=device),
            layer_accepted=torch.zeros(
                (batch, num_drafted_layers), dtype=torch.bool, device=device
            ),
            token_agreement=torch.zeros((batch, num_drafted_layers), device=device),
            num_main_steps=num_main_steps,
            speculated=False,
            decoded_layers=decoded_layers,
            timer=timer,
        )

    @property
    def seconds(self) -> dict[str, float]:
        if self._seconds is None:
            self._seconds = self.timer.read() if self.timer is not None else {}
        return self._seconds

    @seconds.setter
    def seconds(self, value: dict[str, float]) -> None:
        self._seconds = dict(value)

    def __repr__(self) -> str:
        return (
            f"DecodeStats(accepted_layers={self.accepted_layers}, num_main_steps={self.num_main_steps}, "
            f"speculated={self.speculated})"
        )

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def num_drafted_layers(self) -> int:
        return self.layer_accepted.shape[1]


@dataclass
class DecodeResult:
    """``codes[B, T, D, L']`` (LongTensor; ``L' = L`` except for truncated-depth decoders),
    normalized ``actions[B, T, A]`` and ``stats``."""

    codes: torch.Tensor
    actions: torch.Tensor
    stats: DecodeStats


class StageTimer:
    """Wall time between stage boundaries without synchronising inside a decoder call.

    CPU: ``time.perf_counter`` at each ``lap``. CUDA: a timing event is recorded at each lap and
    the intervals are read by :meth:`read` (which waits for the last event), so the decoder's
    own work is never stalled by measurement.
    """

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._marks: list[tuple[str | None, object]] = [(None, self._mark())]

    def _mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charge the time since the previous lap (or construction) to ``stage``."""
        self._marks.append((stage, self._mark()))

    def read(self) -> dict[str, float]:
        """``stage -> seconds`` (every stage of :data:`STAGES` present, 0 when never lapped)."""
        seconds = dict.fromkeys(STAGES, 0.0)
        if self.cuda:
            self._marks[-1][1].synchronize()
        for (_, start), (stage, end) in zip(self._marks[:-1], self._marks[1:], strict=True):
            dt = start.elapsed_time(end) / 1e3 if self.cuda else end - start
            seconds[stage] = seconds.get(stage, 0.0) + dt
        return seconds


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for queued GPU work (no-op on a CPU or when CUDA was never initialised)."""
    if device is not None and torch.device(device).type != "cuda":
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def speculated_acceptance(stats) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(accepted_layers[B], layer_accepted[B, k])`` of a call that drafted, else ``(None, None)``.

    A call that drafted nothing (main-only, draft-only, RSD's ``skip_below`` fallback) is not a
    rejection: the LIBERO policy and the offline evaluation both count acceptance only over
    calls for which this returns tensors. Stats without ``speculated`` count as drafted.
    """
    if stats is None:
        return None, None
    speculated = getattr(stats, "speculated", True)
    accepted = getattr(stats, "accepted_layers", None)
    flags = getattr(stats, "layer_accepted", None)
    if isinstance(
        speculated, torch.Tensor
    ):  # per row (a batch split by skip_below): those that drafted
        if not bool(speculated.any()):
            return None, None
        keep = speculated.to(accepted.device)
        accepted, flags = accepted[keep], None if flags is None else flags[keep]
    elif not speculated:
        return None, None
    if flags is not None and flags.ndim == 2 and flags.shape[1] == 0:
        return None, None
    return accepted, flags


def merge_row_results(parts: list[tuple[torch.Tensor, DecodeResult]], batch: int) -> DecodeResult:
    """Sub-batch results -> one result of ``batch`` rows; ``parts``: ``(row indices, result)``.

    Rows keep their own acceptance (zeros for rows that did not speculate) and ``speculated``
    becomes a ``BoolTensor[batch]``; stage seconds are the parts' sums (the parts ran one after
    the other). Codes must share a shape (every part decodes the same depth).
    """
    first = parts[0][1]
    codes = first.codes.new_zeros((batch, *first.codes.shape[1:]))
    actions = first.actions.new_zeros((batch, *first.actions.shape[1:]))
    k = max(r.stats.layer_accepted.shape[1] for _, r in parts)
    device = first.codes.device
    accepted = torch.zeros(batch, dtype=torch.long, device=device)
    layer_accepted = torch.zeros((batch, k), dtype=torch.bool, device=device)
    agreement = torch.zeros((batch, k), device=device)
    speculated = torch.zeros(batch, dtype=torch.bool)
    seconds: dict[str, float] = {}
    for index, result in parts:
        on = index.to(device)
        codes[on], actions[on] = result.codes, result.actions
        stats = result.stats
        accepted[on] = stats.accepted_layers.to(device)
        width = stats.layer_accepted.shape[1]
        layer_accepted[on, :width] = stats.layer_accepted.to(device)
        agreement[on, :width] = stats.token_agreement.to(device).float()
        speculated[index.cpu()] = bool(stats.speculated)
        for stage, s in stats.seconds.items():
            seconds[stage] = seconds.get(stage, 0.0) + s
    stats = DecodeStats(
        accepted_layers=accepted,
        layer_accepted=layer_accepted,
        token_agreement=agreement,
        num_main_steps=max(r.stats.num_main_steps for _, r in parts),
        speculated=speculated,
        seconds=seconds,
    )
    return DecodeResult(codes=codes, actions=actions, stats=stats)


def row_stats(stats, row: int) -> tuple[int | None, list[float] | None]:
    """Row ``row``'s ``(accepted layers, per-layer accepted flags [k] as floats)`` of one call, or
    ``(None, None)`` when that row drafted nothing (see :func:`speculated_acceptance`).

    ``stats.speculated`` may be one bool for the call or a ``BoolTensor[B]`` per row.
    """
    if stats is None:
        return None, None
    speculated = getattr(stats, "speculated", True)
    if isinstance(speculated, torch.Tensor):
        speculated = bool(speculated[row])
    if not speculated:
        return None, None
    accepted = getattr(stats, "accepted_layers", None)
    flags = getattr(stats, "layer_accepted", None)
    if flags is not None and flags.ndim == 2 and flags.shape[1] == 0:
        return None, None
    a = None if accepted is None else int(torch.as_tensor(accepted).reshape(-1)[row])
    f = None if flags is None else [float(x) for x in torch.as_tensor(flags)[row].tolist()]
    return a, f
