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
    assert (
        "busy process(es) of kind `stream` (cores other processes kept busy in the first pair: idle "
        in text
    )
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


def test_repeated_pairs_alternate_their_order_and_are_counted(bench, monkeypatch, tmp_path):
    """--repeats: every pair times idle and loaded, idle first in even pairs and loaded first in
    odd ones; the summary counts the pairs whose intervals overlap and the shift of each."""
    log = []

    class FakeNeighbours:  # records what the runs were timed beside
        def __init__(self, kinds, running=True):
            log.append(("neighbours", tuple(kinds), running))
            self.awake = running

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            log.append("stopped")

        def wake(self):
            self.awake = True

        def pause(self):
            self.awake = False

    state = {}

    def fake_run(decoders, h, rounds, warmup, resamples, blocks):
        loaded = state["busy"].awake
        log.append("loaded" if loaded else "idle")
        # loaded runs read 10% slower ratios; the second loaded run's interval misses idle's
        second = log.count("loaded") == 2 and loaded
        ratio = 1.8 if loaded else 2.0
        ci = [1.7, 1.9] if second else ([1.6, 2.1] if loaded else [1.95, 2.05])
        entry = {"ratio": ratio, "ci95": ci, "wall_ratio": ratio, "neighbour_cores": 0.0}
        entry |= {"block_speeds": [ratio], "reference": "main_only", "clock_name": "thread CPU"}
        speed = {n: {r: dict(entry) for r in refs} for n, refs in bench.REFERENCES.items()}
        return speed, {n: [] for n in decoders}

    def neighbours(kinds, running=True):
        state["busy"] = FakeNeighbours(kinds, running)
        return state["busy"]

    monkeypatch.setattr(bench, "Neighbours", neighbours)
    monkeypatch.setattr(bench, "timed_run", fake_run)
    monkeypatch.setattr(
        bench,
        "predicted_speed",
        lambda *a: {"H100": {"speedup": {"main_only": 1.0, "main_only_m3": 1.0}}},
    )
    monkeypatch.setattr(bench, "mean_per_chunk", lambda *a: {"passes": 1.0})
    docs = tmp_path / "benchmarks.md"
    agree = bench.main(
        ["--repeats", "3", "--busy", "2", "--neighbour", "stream", "--docs", str(docs)]
    )
    assert log == [
        ("neighbours", ("stream", "stream"), False),  # started once, asleep
        "idle",
        "loaded",
        "loaded",
        "idle",
        "idle",
        "loaded",
        "stopped",
    ]
    assert agree is False
    text = docs.read_text()
    assert "3 pairs of runs, the order within a pair alternating" in text
    rows = [line for line in text.splitlines() if line.startswith("| draft_only_ctx | main_only |")]
    assert len(rows) == 2  # the first pair's table, then the summary of all three
    row = rows[1]
    assert row.split(" | ")[2:] == ["2 of 3", "2.00x", "1.80x", "0.900 (0.900-0.900) |"]
    assert "| all | | 12 of 18 |" in text


def test_no_busy_process_is_a_control_and_bad_counts_are_refused(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])
    assert "--repeats=0, --busy=1: use --repeats >= 1, --busy >= 0" in capsys.readouterr().err
