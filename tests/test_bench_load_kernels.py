"""benchmarks/bench_load_kernels.py: bare kernels timed idle and beside a neighbour (no timing asserted)."""

from __future__ import annotations

import re

import pytest
from conftest import load_benchmark

from rsdvla.decoding import machine


@pytest.mark.skipif(not machine.PROC_STAT.exists(), reason="needs Linux /proc")
def test_runs_idle_and_beside_a_spinning_neighbour_and_writes_its_section(tmp_path):
    bench = load_benchmark("bench_load_kernels")
    docs = tmp_path / "benchmarks.md"
    rows = bench.main(
        ["--cycles", "5", "--rounds", "500", "--warmup", "1", "--scale", "8", "--settle", "0.05"]
        + ["--conditions", "idle", "spin", "--docs", str(docs)]
    )
    by = {r["kernel"]: r for r in rows}
    assert set(by) == {"matmul in cache", "weights streamed", "small ops", "streamed / in cache"}
    for name in ("matmul in cache", "weights streamed", "small ops"):
        spin = by[name]["spin"]
        assert 0 < spin["ci95"][0] <= spin["ci95"][1] and 0 < spin["range"][0] <= spin["range"][1]
        assert spin["slowdown"] > 0
        assert set(by[name]["ms"]) == {"idle", "spin"}
    shift = by["streamed / in cache"]["spin"]["slowdown"]
    expected = (
        by["weights streamed"]["spin"]["slowdown"] / by["matmul in cache"]["spin"]["slowdown"]
    )
    assert shift == pytest.approx(expected)
    text = docs.read_text()
    assert "## Which work slows under load" in text and "slowdown beside spin" in text
    # (500 rounds: over 1 s of metering per condition, or the cores read "?")
    # The neighbour's own CPU time, not the machine's (which on a shared host moves with the
    # host's other tenants): it spun about a core while spin was timed and slept while idle was.
    loads = dict(re.findall(r"(idle|spin) ([0-9.]+ \([0-9.]+\))", text.split("steal time")[1]))
    (idle_all, idle_ours), (spin_all, spin_ours) = (
        [float(x) for x in re.findall(r"[0-9.]+", loads[c])] for c in ("idle", "spin")
    )
    # (a core when the host is quiet; above 0.2 even beside two other busy processes, which
    # leave each of four runnable processes half of the 2 cores)
    assert spin_ours > 0.2 and idle_ours < 0.05, loads
    assert spin_all >= spin_ours - 0.1 and idle_all >= idle_ours - 0.1  # the machine counts ours


def test_conditions_without_idle_are_refused():
    with pytest.raises(SystemExit):
        load_benchmark("bench_load_kernels").main(["--conditions", "spin"])
