"""The machine a speed was measured on: its CPU, and how busy other processes kept it meanwhile.

A CPU-time ratio is a property of the machine *and* of its load: on a 2-core machine a busy
neighbour moves the ratio of two decoders of different shapes by a few percent (shared caches,
the frequency the cores run at), which no interval measured under one load covers. So every
paired timing records, beside its ratio, how many cores other processes used while it ran
(:class:`NeighbourLoad`), and comparisons across runs can say when the loads differ. A
benchmark that starts neighbour processes of its own also measures them apart
(:class:`ProcessLoad`), since the machine-wide count includes whatever else ran.

Linux only for the load (``/proc/stat``, ``/proc/<pid>/stat``); elsewhere it is ``None``.
"""

from __future__ import annotations

import multiprocessing
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


def _process_jiffies(stat: Path) -> int | None:
    """Jiffies a process (all its threads) spent on a CPU: utime + stime of its ``stat`` file."""
    try:
        text = stat.read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[11]) + int(fields[12])


def _own_jiffies() -> int | None:
    """Jiffies this process spent on a CPU (``/proc/self/stat``)."""
    return _process_jiffies(PROC_SELF_STAT)


def format_cores(value: float | None) -> str:
    """A meter's cores as printed beside a speed: ``0.02``, or ``?`` when unknown."""
    return "?" if value is None else f"{value:.2f}"


class _CoreMeter:
    """Mean cores a jiffy counter advanced by while the meter ran (between :meth:`start` and
    :meth:`stop`, summed over every such segment; a running segment counts up to now).
    Subclasses say which counter (:meth:`_jiffies`; None where it cannot be read)."""

    def __init__(self) -> None:
        self._hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._segment: tuple[int, float] | None = None
        self._jiffies_so_far = 0
        self._seconds = 0.0
        self._known = True

    def _jiffies(self) -> int | None:
        raise NotImplementedError

    def start(self):
        count = self._jiffies()
        self._known = self._known and count is not None
        self._segment = None if count is None else (count, time.monotonic())
        return self

    def _open_segment(self) -> tuple[int, float]:
        """Jiffies and seconds of the running segment (0, 0 when none)."""
        count = self._jiffies()
        if self._segment is None or count is None:
            return 0, 0.0
        count0, t0 = self._segment
        return count - count0, time.monotonic() - t0

    def stop(self):
        jiffies, seconds = self._open_segment()
        self._jiffies_so_far += jiffies
        self._seconds += seconds
        self._segment = None
        return self

    def cores(self) -> float | None:
        """Mean cores over the segments so far (None: unknown, or under 1 s in all, too coarse
        for 10 ms jiffies)."""
        jiffies, seconds = self._open_segment()
        seconds += self._seconds
        if not self._known or seconds < 1.0:
            return None
        return max(0.0, (self._jiffies_so_far + jiffies) / self._hz / seconds)


class NeighbourLoad(_CoreMeter):
    """Cores other processes kept busy while this meter ran.

    ``(busy jiffies of the whole machine - this process's) / elapsed jiffies``: 0 on a quiet
    machine, about 1 beside one busy process, up to ``os.cpu_count() - 1`` and more under
    oversubscription. A virtual machine's steal time (the host running someone else) counts as
    busy, so on a shared host this reads above 0 with nothing else running in the machine.
    ``None`` where ``/proc`` is not there.
    """

    def _jiffies(self) -> int | None:
        busy, own = _busy_jiffies(), _own_jiffies()
        return None if busy is None or own is None else busy - own


class ProcessLoad(_CoreMeter):
    """Cores the given processes (by pid) used while this meter ran: what a benchmark's own
    neighbour processes did, apart from whatever else ran on the machine (:class:`NeighbourLoad`
    counts both). ``None`` where one of them cannot be read (gone, or no ``/proc``)."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__()
        self._stats = [PROC_STAT.parent / str(pid) / "stat" for pid in pids]

    def _jiffies(self) -> int | None:
        counts = [_process_jiffies(stat) for stat in self._stats]
        return None if None in counts else sum(counts)


def spin(stop, go, ready) -> None:
    """A neighbour process: burns one core in a Python loop (compute, a few KB of memory) while
    ``go`` is set (it sleeps otherwise) until ``stop`` is; sets ``ready`` once started."""
    ready.set()
    while not stop.is_set():
        if not go.wait(timeout=0.1):
            continue
        for _ in range(100_000):
            pass


def stream(stop, go, ready) -> None:
    """A neighbour process: copies 256 MB over and over (memory bandwidth; it evicts the shared
    cache) while ``go`` is set until ``stop`` is; sets ``ready`` once its arrays are allocated."""
    import numpy as np

    src = np.ones(32 * 2**20)  # float64
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touched: the pages are there before any timing
    ready.set()
    while not stop.is_set():
        if go.wait(timeout=0.1):
            np.copyto(dst, src)


NEIGHBOUR_KINDS = {"spin": spin, "stream": stream}
"""The kinds of neighbour process a benchmark can time beside, by name."""


class Neighbours:
    """Neighbour processes of the given kinds (names in :data:`NEIGHBOUR_KINDS`), as a context
    manager: entering starts them and returns once every one is ready (started, and allocated),
    so that no timing overlaps their start-up (a spawned process imports this package, torch
    included, for seconds); leaving stops them. They run at once, or with ``running=False``
    sleep until :meth:`wake`; :meth:`pause` puts them back to sleep.

        with Neighbours(["stream"]) as busy:
            ...  # timed beside one memory-streaming process
    """

    def __init__(self, kinds: list[str], running: bool = True, start_timeout: float = 120.0):
        unknown = [k for k in kinds if k not in NEIGHBOUR_KINDS]
        if unknown:
            raise ValueError(f"neighbour kinds {unknown}: choose from {sorted(NEIGHBOUR_KINDS)}")
        ctx = multiprocessing.get_context("spawn")
        self._stop, self._go = ctx.Event(), ctx.Event()
        if running:
            self._go.set()
        self._ready = [ctx.Event() for _ in kinds]
        self._procs = [
            ctx.Process(target=NEIGHBOUR_KINDS[k], args=(self._stop, self._go, ready), daemon=True)
            for k, ready in zip(kinds, self._ready, strict=True)
        ]
        self._start_timeout = start_timeout

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def wake(self) -> None:
        self._go.set()

    def pause(self) -> None:
        self._go.clear()

    def __enter__(self) -> Neighbours:
        for proc in self._procs:
            proc.start()
        deadline = time.monotonic() + self._start_timeout
        for proc, ready in zip(self._procs, self._ready, strict=True):
            if not ready.wait(timeout=max(0.0, deadline - time.monotonic())):
                self.__exit__(None, None, None)
                raise RuntimeError(
                    f"a neighbour process was not ready within {self._start_timeout:.0f} s "
                    f"(exit code {proc.exitcode}); the machine is too busy to time beside it"
                )
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._go.set()  # a sleeping neighbour wakes to see stop
        for proc in self._procs:
            if proc.pid is None:
                continue
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
