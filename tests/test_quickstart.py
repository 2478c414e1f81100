"""Quickstart: the stage plan composes real commands, finished stages are skipped, the report reads summaries."""

import json
from pathlib import Path

from conftest import compose_config

from rsdvla import quickstart
from rsdvla.evaluation.quickstart_report import collect_rows


def test_plan_runs_every_stage_with_isolated_artifacts(tmp_path):
    cfg = compose_config("quickstart", [f"work_dir={tmp_path}"], tmp_path)
    stages = quickstart.plan(cfg)
    names = [s.name for s in stages]
    assert names[:4] == ["extract", "train_tokenizer", "train_main", "train_draft"]
    assert {"offline_main_only", "libero_rsd_exact", "libero_rsd_agreement"} <= set(names)
    for stage in stages[1:]:
        assert f"paths.artifacts_dir={tmp_path}/artifacts" in stage.overrides
    libero = next(s for s in stages if s.name == "libero_rsd_agreement")
    assert (
        "env=libero" in libero.overrides and "decoder.acceptance.threshold=0.7" in libero.overrides
    )


def test_finished_stage_is_skipped_and_a_failure_names_the_stage(tmp_path, monkeypatch):
    done = quickstart.Stage("train_main", "train.py", [])
    (tmp_path / "train_main").mkdir()
    (tmp_path / "train_main" / ".done").write_text("x")
    assert quickstart.run_stage(done, tmp_path, force=False) == 0.0

    monkeypatch.setattr(quickstart, "ROOT", tmp_path)
    (tmp_path / "fail.py").write_text("import sys; sys.exit(3)\n")
    (tmp_path / "ok.py").write_text("print('fine')\n")
    try:
        quickstart.run_stage(quickstart.Stage("boom", "fail.py", []), tmp_path, force=False)
    except RuntimeError as err:
        assert "`boom` failed (exit 3)" in str(err)
    else:
        raise AssertionError("a failing stage must raise")
    assert not (tmp_path / "boom" / ".done").exists()
    assert quickstart.run_stage(quickstart.Stage("fine", "ok.py", []), tmp_path, force=False) > 0
    assert (tmp_path / "fine" / ".done").read_text().startswith(str(tmp_path / "ok.py"))


def test_report_merges_offline_and_libero_summaries(tmp_path):
    (tmp_path / "offline_rsd").mkdir()
    (tmp_path / "libero_rsd").mkdir()
    (tmp_path / "offline_rsd" / "summary.json").write_text(
        json.dumps(
            {
                "speedup": 1.3,
                "mean_accepted_layers": 2.5,
                "acceptance_per_layer": [0.9, 0.8, 0.7],
                "action_mse": 0.01,
            }
        )
    )
    (tmp_path / "libero_rsd" / "summary.json").write_text(
        json.dumps(
            {"success_rate": 0.75, "success_ci95": [0.5, 0.9], "episodes": 20, "speedup": 1.2}
        )
    )
    (row,) = collect_rows(Path(tmp_path), ["rsd"])
    assert (
        row["success_rate"] == 0.75
        and row["offline_speedup"] == 1.3
        and row["libero_speedup"] == 1.2
    )
    assert row["acceptance_per_layer"] == [0.9, 0.8, 0.7] and row["action_mse"] == 0.01
