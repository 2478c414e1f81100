"""Diagnostic figures: alignment at the first grasp by hand, and the PNGs the runner and compare write."""

from __future__ import annotations

import numpy as np
import pytest

from rsdvla.evaluation.reports.diagnostic_plots import (
    aligned_at_grasp,
    plot_diagnostics,
    shift_vs_acceptance,
)


def record(grasp, chunk, layer_acceptance, max_abs, shift, accepted):
    return {
        "diagnostics": {"grasp": grasp, "chunk": chunk},
        "layer_acceptance": layer_acceptance,
        "divergence": {"max_abs_norm": max_abs, "gripper_differs": [False] * len(max_abs)},
        "hidden_shift": shift,
        "accepted_layers": accepted,
    }


def test_alignment_at_first_grasp_by_hand(tmp_path):
    # steps 0..5, two steps per chunk; first grasp at step 3 (chunk 1)
    r1 = record(
        [False, False, False, True, True, False],
        [0, 0, 1, 1, 2, 2],
        [[1, 1], [1, 0], [0, 0]],
        [0.0, 0.1, 0.5],
        [None, 0.2, 0.4],
        [2, 1, 0],
    )
    r2 = record(
        [False] * 6, [0, 0, 1, 1, 2, 2], [[1, 1]] * 3, [0.0] * 3, [None, 0.1, 0.1], [2, 2, 2]
    )
    out = aligned_at_grasp([r1, r2])  # r2 never grasps: left out of the aligned panels
    assert sorted(out["layers"]) == [-3, -2, -1, 0, 1, 2]
    assert out["layers"][-3] == [[1, 1]] and out["layers"][0] == [[1, 0]]
    assert out["layers"][1] == [[0, 0]]
    assert out["max_abs_norm"][-1] == [0.1] and out["max_abs_norm"][2] == [0.5]
    shift, accepted = shift_vs_acceptance([r1, r2])
    np.testing.assert_allclose(shift, [0.2, 0.4, 0.1, 0.1])
    np.testing.assert_allclose(accepted, [1, 0, 2, 2])
    png = plot_diagnostics([r1, r2], tmp_path / "d.png")
    assert png.stat().st_size > 10_000
    assert plot_diagnostics([{"success": True}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_runner_and_compare_write_diagnostics_figures(tmp_path):
    from test_compare import make_run, reference_rule, run_rule

    from rsdvla.evaluation.reports import compare

    a = make_run(tmp_path / "a", reference_rule, "ref")
    b = make_run(tmp_path / "b", run_rule, "run")
    assert (a / "diagnostics.png").exists()  # the fake policy's records carry hidden_shift
    compare.main([str(a), str(b), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "diagnostics_a.png").exists()
    assert (tmp_path / "out" / "diagnostics_b.png").exists()


def test_without_grasp_data_the_panels_follow_episode_time():
    from rsdvla.evaluation.reports.diagnostic_plots import aligned_at_start

    records = [
        {
            "layer_acceptance": [[1.0, 0.0], [1.0, 1.0]],
            "divergence": {"max_abs_norm": [0.0, 0.5], "gripper_differs": [False, True]},
        },
        {
            "layer_acceptance": [[0.0, 0.0]],
            "divergence": {"max_abs_norm": [0.25], "gripper_differs": [False]},
        },
    ]
    out = aligned_at_start(records)
    assert out["layers"][0] == [[1.0, 0.0], [0.0, 0.0]] and out["layers"][1] == [[1.0, 1.0]]
    assert out["max_abs_norm"][0] == [0.0, 0.25] and out["gripper_differs"][1] == [1.0]
