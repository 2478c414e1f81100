"""Paired timing of decoders: the one place every speedup the project prints comes from.

Decoders are timed interleaved on the same inputs in one process: call ``i`` of a round runs
every decoder once, in an order rotated by one each round (:func:`rotated`), so drift in machine
state (caches, clocks, load) falls on all of them alike. Each call records two clocks:

- ``cpu``: CPU seconds of the calling thread (``time.thread_time``) with one torch thread, else of
  the whole process (``time.process_time``, which also counts torch's worker threads). CPU time
  leaves out the time other processes hold the core, so it is the clock that survives load;
- ``wall``: ``time.perf_counter``, with CUDA synchronised before and after the call.

On a CUDA device the GPU's time is not CPU time: the speed clock there is ``wall``
(:func:`speed_clock`). A speedup is the ratio of medians ``median(reference) / median(setting)``
with a 95% percentile bootstrap interval, seeded; the reference is named and must have been timed
in the same run. The interval resamples one of two units:

- ``call``: the paired calls (chunks) themselves. It says how precisely these calls pin the
  ratio of *this* stretch of time, and it is too narrow across runs: the ratio itself drifts
  with machine state (frequency, a neighbour's use of the shared caches) by more than that;
- ``block``: contiguous blocks of rounds (``PairedTimer(block_rounds=...)``), whole blocks drawn
  with replacement, all calls of a drawn block kept (a cluster bootstrap). The drift between
  blocks then enters the interval, which is what makes two runs comparable within it. Fewer
  than :data:`MIN_BLOCKS` blocks fall back to calls, and the entry says which unit it used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from rsdvla.decoding.machine import NeighbourLoad
from rsdvla.decoding.stats import synchronize

DEFAULT_REFERENCE = "main_only"
"""Every speedup reads against full-depth greedy main-only unless another reference is named."""
RESAMPLES = 1000
MIN_RESAMPLES = 100
MIN_BLOCKS = 5
"""A block interval needs at least this many blocks; with fewer the interval resamples calls."""


def rotated(names: Sequence[str], index: int) -> list[str]:
    """``names`` rotated left by ``index`` (mod their count): the call order of round ``index``."""
    names = list(names)
    shift = index % len(names) if names else 0
    return names[shift:] + names[:shift]


def cpu_clock_name() -> str:
    """``thread CPU`` with one torch thread (all work in the calling thread), else ``process CPU``."""
    return "thread CPU" if torch.get_num_threads() == 1 else "process CPU"


def _cpu_now() -> float:
    return time.thread_time() if torch.get_num_threads() == 1 else time.process_time()


def speed_clock(device: torch.device | str | None) -> str:
    """The clock speedups are read on: ``wall`` on a CUDA device (GPU time is not CPU time), else ``cpu``."""
    return "wall" if device is not None and torch.device(device).type == "cuda" else "cpu"


def timed_cpu_wall(fn: Callable, *args, device=None):
    """``(fn(*args), cpu seconds, wall seconds)``; CUDA synchronised before and after the call."""
    synchronize(device)
    cpu, wall = _cpu_now(), time.perf_counter()
    out = fn(*args)
    synchronize(device)
    return out, _cpu_now() - cpu, time.perf_counter() - wall


class PairedTimer:
    """Per-call CPU and wall seconds of named decoders timed interleaved on the same inputs.

    ``timer.round({name: fn}, *args)`` calls every ``fn(*args)`` once in the rotated order of this
    round and returns ``{name: result}``; ``timer.add(name, cpu, wall)`` records a call timed
    elsewhere (the policy's). ``cpu[name]`` / ``wall[name]``: lists of seconds, index = round.
    ``block_rounds``: rounds per timing block (round ``i`` is in block ``i // block_rounds``), the
    unit the speed interval resamples; None: one block, the interval resamples calls.
    """

    def __init__(
        self,
        names: Sequence[str],
        device: torch.device | str | None = None,
        block_rounds: int | None = None,
    ):
        if block_rounds is not None and (isinstance(block_rounds, bool) or int(block_rounds) < 1):
            raise ValueError(f"PairedTimer: block_rounds={block_rounds!r} must be >= 1 or None")
        self.names = list(names)
        self.device = device
        self.block_rounds = None if block_rounds is None else int(block_rounds)
        self.cpu: dict[str, list[float]] = {n: [] for n in self.names}
        self.wall: dict[str, list[float]] = {n: [] for n in self.names}
        self.rounds = 0
        self.cpu_clock = cpu_clock_name()
        self.neighbour_load = NeighbourLoad().start()

    def blocks(self) -> list[int] | None:
        """The block of every recorded call, by its index (None without ``block_rounds``)."""
        if self.block_rounds is None:
            return None
        calls = len(self.wall[self.names[0]]) if self.names else 0
        return [i // self.block_rounds for i in range(calls)]

    def round(self, calls: dict[str, Callable], *args) -> dict:
        if set(calls) != set(self.names):
            raise ValueError(
                f"PairedTimer.round: got decoders {sorted(calls)}, timed are {self.names}"
            )
        results = {}
        for name in rotated(self.names, self.rounds):
            results[name], cpu, wall = timed_cpu_wall(calls[name], *args, device=self.device)
            self.add(name, cpu, wall)
        self.rounds += 1
        return results

    def add(self, name: str, cpu: float, wall: float) -> None:
        self.cpu[name].append(float(cpu))
        self.wall[name].append(float(wall))

    def speed(
        self,
        setting: str,
        reference: str = DEFAULT_REFERENCE,
        field: str = "speed reference",
        resamples: int = RESAMPLES,
        seed: int = 0,
    ) -> dict:
        """``setting`` against ``reference``, both timed here: see :func:`paired_speed`."""
        check_reference(reference, self.names, field)
        return paired_speed(
            {"cpu": self.cpu[reference], "wall": self.wall[reference]},
            {"cpu": self.cpu[setting], "wall": self.wall[setting]},
            reference,
            clock=speed_clock(self.device),
            cpu_clock=self.cpu_clock,
            resamples=resamples,
            seed=seed,
            blocks=self.blocks(),
            neighbour_cores=self.neighbour_load.cores(),
        )

    def block_speeds(self, setting: str, reference: str = DEFAULT_REFERENCE) -> list[float]:
        """The ratio of medians of every block on the CPU clock (on wall for a CUDA device):
        how far the ratio drifts between stretches of time. One value without blocks."""
        clock = self.cpu if speed_clock(self.device) == "cpu" else self.wall
        ref, new = np.asarray(clock[reference]), np.asarray(clock[setting])
        labels = np.asarray(self.blocks() if self.block_rounds else [0] * len(ref))
        return [ratio_of_medians(ref[labels == b], new[labels == b]) for b in np.unique(labels)]


def check_reference(reference: str, timed: Sequence[str], field: str) -> None:
    """One line naming ``field`` and the fix when ``reference`` was not timed in the run."""
    if reference not in timed:
        raise ValueError(
            f"{field}={reference!r} was not timed in this run (timed: {', '.join(timed) or 'none'}); "
            f"set {field} to one of them, or time {reference} beside the setting in the same run"
        )


def check_resamples(resamples: int, field: str = "resamples") -> int:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < MIN_RESAMPLES:
        raise ValueError(
            f"{field}={resamples!r}: a bootstrap interval needs >= {MIN_RESAMPLES} resamples "
            f"(default {RESAMPLES}); raise {field}"
        )
    return resamples


def check_blocks(blocks, field: str = "blocks") -> int:
    """A block count for the speed interval: 1 (resample the calls) or >= :data:`MIN_BLOCKS`."""
    if (
        isinstance(blocks, bool)
        or not isinstance(blocks, int)
        or not (blocks == 1 or blocks >= MIN_BLOCKS)
    ):
        raise ValueError(
            f"{field}={blocks!r}: the speed interval resamples blocks of calls and needs "
            f">= {MIN_BLOCKS} of them (or 1: resample the calls); set {field}=10"
        )
    return blocks


def rounds_per_block(rounds: int, blocks: int) -> int | None:
    """``PairedTimer``'s ``block_rounds`` that splits ``rounds`` into at most ``blocks``
    contiguous blocks (ceil division); None for ``blocks == 1`` (resample the calls)."""
    return None if blocks == 1 else -(-rounds // blocks)


def ratio_of_medians(reference: Sequence[float], setting: Sequence[float]) -> float:
    """``median(reference) / median(setting)``: > 1 means the setting is faster."""
    return float(np.median(reference) / np.median(setting))


def interval_unit(blocks: Sequence[int] | None) -> str:
    """``block`` when ``blocks`` labels at least :data:`MIN_BLOCKS` distinct blocks, else ``call``:
    what :func:`bootstrap_ratio_interval` resamples."""
    return "block" if blocks is not None and len(set(blocks)) >= MIN_BLOCKS else "call"


def bootstrap_ratio_interval(
    reference: Sequence[float],
    setting: Sequence[float],
    resamples: int = RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
    blocks: Sequence[int] | None = None,
) -> list[float]:
    """Percentile bootstrap interval ``[low, high]`` of :func:`ratio_of_medians` over paired calls.

    ``reference[i]`` and ``setting[i]`` are the same call ``i`` (the same input), and the pairs are
    kept. Each resample (``numpy.random.default_rng(seed)``) draws, with replacement, either call
    indices or, when ``blocks`` (the block label of every call) names at least
    :data:`MIN_BLOCKS` blocks, whole blocks, keeping all their calls (:func:`interval_unit`).
    """
    check_resamples(resamples)
    ref, new = np.asarray(reference, float), np.asarray(setting, float)
    if ref.shape != new.shape or ref.ndim != 1 or len(ref) == 0:
        raise ValueError(
            f"paired timings need the same number of calls, got {ref.shape} and {new.shape}"
        )
    rng = np.random.default_rng(seed)
    if interval_unit(blocks) == "block":
        labels = np.asarray(blocks)
        if labels.shape != ref.shape:
            raise ValueError(f"block labels {labels.shape} do not match the calls {ref.shape}")
        members = [np.flatnonzero(labels == b) for b in np.unique(labels)]
        drawn = rng.integers(0, len(members), size=(resamples, len(members)))
        ratios = np.empty(resamples)
        for r, chosen in enumerate(drawn):
            index = np.concatenate([members[b] for b in chosen])
            ratios[r] = np.median(ref[index]) / np.median(new[index])
    else:
        index = rng.integers(0, len(ref), size=(resamples, len(ref)))
        ratios = np.median(ref[index], axis=1) / np.median(new[index], axis=1)
    tail = 100 * (1 - level) / 2
    return [float(np.percentile(ratios, tail)), float(np.percentile(ratios, 100 - tail))]


def intervals_overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether intervals ``a = [low, high]`` and ``b`` share a point: two runs of the same
    setting "agree" when their speed intervals overlap."""
    return a[0] <= b[1] and b[0] <= a[1]


def paired_speed(
    reference: dict[str, Sequence[float]],
    setting: dict[str, Sequence[float]],
    reference_name: str,
    clock: str = "cpu",
    cpu_clock: str = "thread CPU",
    resamples: int = RESAMPLES,
    seed: int = 0,
    blocks: Sequence[int] | None = None,
    neighbour_cores: float | None = None,
) -> dict:
    """The speed entry of one setting against one reference (``{"cpu": [s], "wall": [s]}`` each,
    ``cpu`` optional: without it the entry reads ``wall``); ``blocks``: each call's timing block.

    Returns ``reference``, ``clock`` (``cpu`` or ``wall``: the clock of ``ratio``), ``clock_name``
    (``thread CPU``, ``process CPU`` or ``wall``), ``ratio`` and ``ci95`` on that clock,
    ``wall_ratio`` / ``wall_ci95`` and ``cpu_ratio`` / ``cpu_ci95`` beside, ``median_ms`` and
    ``reference_median_ms`` per clock, ``calls``, ``resamples``, ``interval_unit`` (``call`` or
    ``block``: what the intervals resample), ``blocks`` (how many; 1 without blocks) and
    ``neighbour_cores`` (cores other processes kept busy while the run was timed,
    :class:`rsdvla.decoding.machine.NeighbourLoad`; None where unknown).
    """
    clocks = [
        c for c in ("cpu", "wall") if reference.get(c) is not None and setting.get(c) is not None
    ]
    if clock not in clocks:
        clock = "wall"
    entry: dict = {"reference": reference_name, "clock": clock}
    entry["clock_name"] = cpu_clock if clock == "cpu" else "wall"
    for name in clocks:
        ref, new = reference[name], setting[name]
        entry[f"{name}_ratio"] = ratio_of_medians(ref, new)
        entry[f"{name}_ci95"] = bootstrap_ratio_interval(ref, new, resamples, seed, blocks=blocks)
    entry["ratio"], entry["ci95"] = entry[f"{clock}_ratio"], entry[f"{clock}_ci95"]
    entry["median_ms"] = {n: 1e3 * float(np.median(setting[n])) for n in clocks}
    entry["reference_median_ms"] = {n: 1e3 * float(np.median(reference[n])) for n in clocks}
    entry["calls"] = len(reference["wall"])
    entry["resamples"] = resamples
    entry["interval_unit"] = interval_unit(blocks)
    entry["blocks"] = 1 if blocks is None else len(set(blocks))
    entry["neighbour_cores"] = None if neighbour_cores is None else round(neighbour_cores, 2)
    return entry


def format_ratio(entry: dict) -> str:
    """``1.23x [1.10, 1.35]``: a speed entry's ratio and its 95% interval."""
    low, high = entry["ci95"]
    return f"{entry['ratio']:.2f}x [{low:.2f}, {high:.2f}]"


def format_speed(entry: dict | None) -> str:
    """``1.23x [1.10, 1.35] vs main_only (thread CPU)``, or ``-``."""
    if not entry:
        return "-"
    return f"{format_ratio(entry)} vs {entry['reference']} ({entry['clock_name']})"


def depth_reference(depth: int | None, num_layers: int) -> str | None:
    """``main_only_m{depth}`` for a truncated depth (``depth < num_layers``), else None."""
    return None if depth is None or depth >= num_layers else f"main_only_m{depth}"


def decoder_depth(decoder) -> int | None:
    """The layer cap of a decoder (``decoder.depth``): main-only ``depth``, RSD ``num_layers``,
    adaptive ``max_depth``, draft-only ``k``; None when it does not say."""
    for attribute in ("depth", "max_depth", "num_layers", "k"):
        value = getattr(decoder, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def speed_columns(prefix: str, entry: dict | None) -> dict:
    """Flat table columns of a speed entry: ``prefix``, ``prefix_ci_low``, ``prefix_ci_high``,
    ``prefix_reference`` and ``prefix_clock`` (None when ``entry`` is None)."""
    entry = entry or {}
    low, high = entry.get("ci95") or (None, None)
    return {
        prefix: entry.get("ratio"),
        f"{prefix}_ci_low": low,
        f"{prefix}_ci_high": high,
        f"{prefix}_reference": entry.get("reference"),
        f"{prefix}_clock": entry.get("clock_name"),
    }


def format_columns(row: dict, prefix: str) -> str:
    """``1.23x [1.10, 1.35]`` of :func:`speed_columns`' columns in ``row``, or ``-``."""
    value = row.get(prefix)
    if value is None:
        return "-"
    return f"{value:.2f}x [{row[f'{prefix}_ci_low']:.2f}, {row[f'{prefix}_ci_high']:.2f}]"


def relative_speed(
    ref_a: Sequence[float],
    a: Sequence[float],
    ref_b: Sequence[float],
    b: Sequence[float],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, list[float]]:
    """How much faster run B's decoder is than run A's, each timed against the same reference
    in its own run: ``(R_b / B) / (R_a / A)`` of medians (``ref_a[i], a[i]`` paired calls of run
    A, likewise B), with a 95% percentile interval resampling each run's calls independently."""
    check_resamples(resamples)
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(x, float) for x in (ref_a, a, ref_b, b)]
    ia = rng.integers(0, len(arrays[1]), size=(resamples, len(arrays[1])))
    ib = rng.integers(0, len(arrays[3]), size=(resamples, len(arrays[3])))
    speed_a = np.median(arrays[0][ia], 1) / np.median(arrays[1][ia], 1)
    speed_b = np.median(arrays[2][ib], 1) / np.median(arrays[3][ib], 1)
    point = ratio_of_medians(arrays[2], arrays[3]) / ratio_of_medians(arrays[0], arrays[1])
    ratios = speed_b / speed_a
    return point, [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]
