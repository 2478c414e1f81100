"""What a speed records about its machine: the CPU's name and flags, and the load of other processes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from rsdvla.decoding import machine


def test_cpu_model_and_bf16_units_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some Xeon(R) CPU\nflags\t\t: fpu avx2 avx512_bf16 amx_bf16\n"
    )
    monkeypatch.setattr(machine, "CPUINFO", info)
    machine._cpuinfo_field.cache_clear()
    try:
        assert machine.cpu_model() == "Some Xeon(R) CPU"
        assert machine.bf16_matrix_units() == "AMX"  # the better of the two
        assert machine.bf16_matrix_units(frozenset({"avx512_bf16"})) == "AVX512-BF16"
        assert machine.bf16_matrix_units(frozenset({"avx2"})) is None
    finally:
        machine._cpuinfo_field.cache_clear()


class _Clock:
    """Stands in for the machine's counters: seconds, machine-wide busy jiffies, this process's."""

    def __init__(self, monkeypatch):
        self.now, self.busy, self.own = 0.0, 0, 0
        monkeypatch.setattr(machine, "_busy_jiffies", lambda: self.busy)
        monkeypatch.setattr(machine, "_own_jiffies", lambda: self.own)
        monkeypatch.setattr(machine.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(machine.os, "sysconf", lambda name: 100)

    def run(self, seconds, own_cores, other_cores):
        self.now += seconds
        self.own += round(100 * seconds * own_cores)
        self.busy += round(100 * seconds * (own_cores + other_cores))


def test_neighbour_load_subtracts_this_process_and_sums_segments(monkeypatch):
    clock = _Clock(monkeypatch)
    meter = machine.NeighbourLoad().start()
    clock.run(2.0, own_cores=1.0, other_cores=0.0)  # this process's own work is not a neighbour's
    assert meter.cores() == 0.0
    clock.run(2.0, own_cores=1.0, other_cores=1.0)  # a running segment counts up to now
    assert meter.cores() == pytest.approx(0.5)
    meter.stop()
    clock.run(5.0, own_cores=0.0, other_cores=2.0)  # not metered
    meter.start()
    clock.run(1.0, own_cores=0.5, other_cores=0.5)
    meter.stop()
    assert meter.cores() == pytest.approx((0 + 2.0 + 0.5) / 5.0)
    short = machine.NeighbourLoad().start()
    clock.run(0.5, own_cores=0.0, other_cores=1.0)
    assert short.cores() is None  # under a second: too coarse to say
    monkeypatch.setattr(machine, "_busy_jiffies", lambda: None)
    assert machine.NeighbourLoad().start().cores() is None  # no /proc: unknown, never 0


@pytest.mark.skipif(not machine.PROC_STAT.exists(), reason="needs Linux /proc")
def test_a_real_busy_process_is_counted_by_both_meters():
    """Beside a real spinning process (this one sleeping), :class:`ProcessLoad` reads about a
    core for it and :class:`NeighbourLoad` at least that much (the machine counts it, and
    whatever else runs on the host beside it, which is why nothing here reads the machine alone)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        machine_wide = machine.NeighbourLoad().start()
        its_own = machine.ProcessLoad([busy.pid]).start()
        time.sleep(1.5)
        beside, spun = machine_wide.cores(), its_own.cores()
    finally:
        busy.kill()
        busy.wait()
    assert spun > 0.3, spun  # about a core on a quiet host, a share of one on a busy one
    assert beside >= spun - 0.1, (beside, spun)
    assert machine.ProcessLoad([busy.pid]).start().cores() is None  # gone: unknown


@pytest.mark.skipif(not machine.PROC_STAT.exists(), reason="needs Linux /proc")
def test_neighbours_start_ready_sleep_while_paused_and_stop():
    """The benchmarks' neighbour processes: entering returns once they have started (so no
    timing overlaps their start-up, which imports this package), a paused one uses no CPU, a
    woken one about a core, and leaving stops them all."""
    with machine.Neighbours(["spin"], running=False) as group:
        (pid,) = group.pids
        paused = machine.ProcessLoad([pid]).start()
        time.sleep(1.2)
        asleep = paused.cores()
        group.wake()
        time.sleep(0.2)
        awake = machine.ProcessLoad([pid]).start()
        time.sleep(1.2)
        spinning = awake.cores()
        group.pause()
        time.sleep(0.3)
        paused_again = machine.ProcessLoad([pid]).start()
        time.sleep(1.2)
        asleep_again = paused_again.cores()
    assert asleep < 0.1 and asleep_again < 0.1, (asleep, asleep_again)
    assert spinning > 0.3, spinning  # about a core on a quiet host
    assert not machine.PROC_STAT.parent.joinpath(str(pid)).exists()  # stopped and reaped
    with pytest.raises(ValueError, match="neighbour kinds \\['sprint'\\]: choose from"):
        machine.Neighbours(["sprint"])
