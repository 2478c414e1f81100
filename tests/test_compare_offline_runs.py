"""benchmarks/compare_offline_runs.py: two frontier runs' offline speeds, setting by setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark


def write_point(root: Path, name: str, speed: dict, identity: dict) -> None:
    folder = root / name / "offline"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"speed": speed, "identity": identity}))


def entry(ratio, low, high, wall, blocks=1, cores=None):
    unit = "block" if blocks > 1 else "call"
    return {
        "neighbour_cores": cores,
        "ratio": ratio,
        "ci95": [low, high],
        "wall_ratio": wall,
        "calls": 400,
        "interval_unit": unit,
        "blocks": blocks,
    }


def test_two_runs_agree_where_their_intervals_overlap(tmp_path):
    script = load_benchmark("compare_offline_runs")
    a, b = tmp_path / "a", tmp_path / "b"
    ident = {"overrides": ["decoder=main_only", "decoder.depth=3"]}
    write_point(
        a,
        "m3",
        {"main_only": entry(2.4, 2.3, 2.5, 2.4), "main_only_m3": entry(1.0, 0.99, 1.01, 1.0)},
        ident,
    )
    write_point(
        b,
        "m3",
        {
            "main_only": entry(2.6, 2.52, 2.7, 3.1, blocks=10, cores=1.02),
            "main_only_m3": entry(1.0, 0.98, 1.02, 1.1, blocks=10, cores=0.98),
        },
        ident,
    )
    write_point(a, "only_in_a", {"main_only": entry(1.0, 1.0, 1.0, 1.0)}, {})
    rows = script.compare(script.offline_points(a), script.offline_points(b))
    assert [(r["setting"], r["reference"], r["agree"]) for r in rows] == [
        ("m3", "main_only", False),  # [2.3, 2.5] and [2.52, 2.7] do not meet
        ("m3", "main_only_m3", True),
    ]
    docs = tmp_path / "benchmarks.md"
    assert script.main([str(a), str(b), "--labels", "idle", "busy", "--docs", str(docs)]) is False
    text = docs.read_text()
    assert (
        "**1 of 2** pairs agree" in text
        and "intervals over 10 blocks of 400 calls; over 400 calls." in text
        and "| m3 | main_only | 2.40x [2.30, 2.50] | 2.60x [2.52, 2.70] | NO |" in text
        # the load each run was timed under: unrecorded in the older run, about one core in b
        and "median over points): idle not recorded, busy 1.02." in text
        and "| 2.40x | 2.60x | ? / 1.02 |" not in text  # wall columns come first
        and "| 2.40x | 3.10x | ? / 1.02 |" in text
    )


def test_points_of_different_identities_are_refused(tmp_path):
    script = load_benchmark("compare_offline_runs")
    a, b = tmp_path / "a", tmp_path / "b"
    write_point(a, "rsd", {"main_only": entry(1.0, 0.9, 1.1, 1.0)}, {"checkpoints": {"main": "x"}})
    write_point(b, "rsd", {"main_only": entry(1.0, 0.9, 1.1, 1.0)}, {"checkpoints": {"main": "y"}})
    with pytest.raises(
        ValueError, match="rsd: the two runs' offline points have different identities"
    ):
        script.compare(script.offline_points(a), script.offline_points(b))
    with pytest.raises(FileNotFoundError, match="no such frontier work dir"):
        script.offline_points(tmp_path / "missing")
