"""The machine a speed was measured on: its CPU, and how busy other processes kept it meanwhile.

A CPU-time ratio is a property of the machine *and* of its load: on a 2-core machine a busy
neighbour moves the ratio of two decoders of different shapes by a few percent (shared caches,
the frequency the cores run at), which no interval measured under one load covers. So every
paired timing records, beside its ratio, how many cores other processes used while it ran
(:class:`NeighbourLoad`), and comparisons across runs can say when the loads differ.

Linux only for the load (``/proc/stat``, ``/proc/self/stat``); elsewhere it is ``None``.
"""

from __future__ import annotations

import os
import platform
import time
from functools import cache
from pathlib import Path

PROC_STAT = Path("/proc/stat")
PROC_SELF_STAT = Path("/proc/self/stat")
CPUINFO = Path("/proc/cpuinfo")
BF16_MATRIX_FLAGS = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"))
"""``/proc/cpuinfo`` flags of bfloat16 matrix instructions, best first, and their names."""


@cache
def _cpuinfo_field(field: str) -> str | None:
    try:
        for line in CPUINFO.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == field:
                return value.strip()
    except OSError:
        return None
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where there is none)."""
    return frozenset((_cpuinfo_field("flags") or "").split())


def bf16_matrix_units(flags: frozenset[str] | None = None) -> str | None:
    """Name of the CPU's bfloat16 matrix instructions (``AMX``, ``AVX512-BF16``), None without any."""
    flags = cpu_flags() if flags is None else flags
    return next((name for flag, name in BF16_MATRIX_FLAGS if flag in flags), None)


def machine_description(threads: int) -> str:
    """``AMD EPYC (x86_64, 2 cores), 1 torch thread(s)``: the hardware line of a speed table."""
    return (
        f"{cpu_model()} ({platform.machine()}, {os.cpu_count()} cores), {threads} torch thread(s)"
    )


def _busy_jiffies() -> int | None:
    """Jiffies every CPU spent busy since boot (``/proc/stat``: all but idle and iowait)."""
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return user + nice + system + irq + softirq + steal


def _own_jiffies() -> int | None:
    """Jiffies this process (all its threads) spent on a CPU (``/proc/self/stat``: utime + stime)."""
    try:
        text = PROC_SELF_STAT.read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[11]) + int(fields[12])


class NeighbourLoad:
    """Cores other processes kept busy while this meter ran (between :meth:`start` and
    :meth:`stop`, summed over every such segment; a running segment counts up to now).

    ``(busy jiffies of the whole machine - this process's) / elapsed jiffies``: 0 on a quiet
    machine, about 1 beside one busy process, up to ``os.cpu_count() - 1`` and more under
    oversubscription (a VM's steal time counts as busy). ``None`` where ``/proc`` is not there.
    """

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._segment: tuple[int, int, float] | None = None
        self._other_jiffies = 0
        self._seconds = 0.0
        self._known = True

    def start(self) -> NeighbourLoad:
        busy, own = _busy_jiffies(), _own_jiffies()
        if busy is None or own is None:
            self._known = False
        self._segment = None if busy is None or own is None else (busy, own, time.monotonic())
        return self

    def _open_segment(self) -> tuple[int, float]:
        """Other processes' jiffies and the seconds of the running segment (0, 0 when none)."""
        busy, own = _busy_jiffies(), _own_jiffies()
        if self._segment is None or busy is None or own is None:
            return 0, 0.0
        busy0, own0, t0 = self._segment
        return (busy - busy0) - (own - own0), time.monotonic() - t0

    def stop(self) -> NeighbourLoad:
        jiffies, seconds = self._open_segment()
        self._other_jiffies += jiffies
        self._seconds += seconds
        self._segment = None
        return self

    def cores(self) -> float | None:
        """Mean cores busy with other processes over the segments so far (None: unknown, or
        under 1 s in all, too coarse for 10 ms jiffies)."""
        jiffies, seconds = self._open_segment()
        seconds += self._seconds
        if not self._known or seconds < 1.0:
            return None
        return max(0.0, (self._other_jiffies + jiffies) / self._hz / seconds)


def spin(stop, go=None) -> None:
    """A neighbour process: burns one core in a Python loop (compute, a few KB of memory) until
    ``stop`` is set; with ``go``, only while ``go`` is set (it sleeps otherwise)."""
    while not stop.is_set():
        if go is not None and not go.wait(timeout=0.1):
            continue
        for _ in range(100_000):
            pass


def stream(stop, go=None) -> None:
    """A neighbour process: copies 256 MB over and over (memory bandwidth; it evicts the shared
    cache) until ``stop`` is set; with ``go``, only while ``go`` is set."""
    import numpy as np

    src = np.ones(32 * 2**20)  # float64
    dst = np.empty_like(src)
    while not stop.is_set():
        if go is None or go.wait(timeout=0.1):
            np.copyto(dst, src)
