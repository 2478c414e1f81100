"""benchmarks/bench_timing_load.py: the same paired timing idle and beside a busy process."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_timing_load.py"


@pytest.fixture
def bench(monkeypatch):
    """The script as an importable module: its busy processes are spawned and import it by name."""
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    return importlib.import_module("bench_timing_load")


def test_both_runs_are_tabled_with_block_intervals_and_block_ranges(bench, tmp_path):
    docs = tmp_path / "benchmarks.md"
    argv = [
        "--rounds",
        "10",
        "--warmup",
        "1",
        "--blocks",
        "5",
        "--busy",
        "1",
        "--neighbour",
        "stream",
    ]
    bench.main([*argv, "--hidden-dim", "64", "--resamples", "100", "--docs", str(docs)])
    text = docs.read_text()
    assert "## Speed under load" in text and "resampling 5 contiguous blocks of rounds" in text
    assert "busy process(es) of kind `stream` (cores other processes kept busy: idle " in text
    rows = [line for line in text.splitlines() if line.startswith("| rsd_ctx_corr0_m3 |")]
    assert [row.split(" | ")[1] for row in rows] == ["main_only", "main_only_m3"]
    cells = rows[1].split(" | ")
    # speedups with intervals, then whether they overlap, then each run's range of block ratios
    assert cells[2].endswith("]") and cells[4] in ("yes", "NO")
    low, high = (float(x) for x in cells[5].removesuffix("x").split("-"))
    assert 0 < low <= high


def test_too_few_blocks_are_refused(bench):
    with pytest.raises(ValueError, match=r"^--blocks=2: .* >= 5 of them"):
        bench.main(["--blocks", "2"])
