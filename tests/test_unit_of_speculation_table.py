"""benchmarks/unit_of_speculation_table.py: the per-stack table from a frontier work dir."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_benchmark


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def summary(accepted, passes, ratio, predicted, mse=0.05):
    return {
        "action_mse": mse,
        "mean_accepted_layers": accepted,
        "cost_per_chunk": {"decoder": {"passes": passes}},
        "speed": {"main_only": {"ratio": ratio, "ci95": [ratio - 0.1, ratio + 0.1]}},
        "gpu_prediction_openvla_size": {"H100": {"speedup": {"main_only": predicted}}},
    }


def test_one_block_per_stack_with_its_own_main_only(tmp_path, capsys):
    quality = {"recon_mse": [0.1, 0.002], "draft_layer_agreement": [0.84, 0.5, 0.25]}
    write(
        tmp_path / "rfsq" / "quality.json",
        {**quality, "recon_mse": [0.1, 1e-7], "tokens_per_layer": 128, "vocab_size": 7},
    )
    write(
        tmp_path / "main_only" / "offline" / "summary.json", summary(None, 8, 1.0, 1.0, mse=0.0265)
    )
    write(tmp_path / "rsd_exact" / "offline" / "summary.json", summary(0.13, 8.9, 0.82, 0.99))
    write(tmp_path / "g1" / "quality.json", {**quality, "tokens_per_layer": 1, "vocab_size": 64})
    write(
        tmp_path / "g1_main_only" / "offline" / "summary.json",
        summary(None, 8, 1.0, 1.0, mse=0.032),
    )
    for i, name in enumerate(load_benchmark("unit_of_speculation_table").STACK_SETTINGS):
        write(tmp_path / f"g1_{name}" / "offline" / "summary.json", summary(1.5 + i, 7.0, 1.1, 1.3))
    write(tmp_path / "untrained" / "quality.json", quality)  # no offline points: left out
    load_benchmark("unit_of_speculation_table").main([str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 1 + 5
    assert lines[2].startswith(
        "| RFSQ (quickstart) | 128 | < 0.00001 | 0.0265 | 84% / 50% / 25% | exact k=7 | 0.13 | 8.9 | 0.82x [0.72, 0.92] | 0.99x |"
    )
    assert lines[3] == (
        "| RVQ G=1, C=64 (`g1`) | 1 | 0.0020 | 0.0320 | 84% / 50% / 25% | exact k=3 | 1.50 | 7.0 "
        "| 1.10x [1.00, 1.20] | 1.30x |"
    )
    assert lines[7].startswith("| | | | | | k=7, tree 4 | 5.50 |")
