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


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@pytest.mark.skipif(not machine.PROC_STAT.exists(), reason="needs Linux /proc")
def test_neighbour_load_counts_other_processes_not_this_one():
    meter = machine.NeighbourLoad().start()
    _spin(1.5)  # this process's own work is not a neighbour's
    own = meter.cores()
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        meter = machine.NeighbourLoad().start()
        time.sleep(1.5)
        beside = meter.cores()
    finally:
        busy.kill()
        busy.wait()
    assert beside > 0.6 and beside > own + 0.4, (own, beside)
    assert machine.NeighbourLoad().start().cores() is None  # under a second: too coarse to say
    # segments add up: two of 0.6 s each, the second beside a busy process, read about half a core
    meter = machine.NeighbourLoad().start()
    time.sleep(0.6)
    meter.stop()
    time.sleep(0.5)  # not metered
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        meter.start()
        time.sleep(0.6)
        meter.stop()
    finally:
        busy.kill()
        busy.wait()
    assert 0.25 < meter.cores() < 0.8, meter.cores()
