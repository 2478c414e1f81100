"""Quickstart: the stage plan composes real commands, finished stages are skipped, the report reads summaries."""

import json
from pathlib import Path

from conftest import compose_config

from rsdvla import quickstart
from rsdvla.evaluation.reports.quickstart_report import collect_rows


def test_plan_publishes_where_evaluate_looks_by_default(tmp_path):
    cfg = compose_config("quickstart", [f"work_dir={tmp_path}", "paths.root_dir=/r"], tmp_path)
    stages = quickstart.plan(cfg)
    names = [s.name for s in stages]
    assert names[:4] == ["extract", "train_tokenizer", "train_main", "train_draft"]
    assert {"offline_main_only", "libero_rsd_exact", "libero_rsd_agreement"} <= set(names)
    for stage in stages[1:]:
        assert "paths.artifacts_dir=/r/outputs/artifacts/sample" in stage.overrides
    draft = next(s for s in stages if s.name == "train_draft")
    assert "model.module.teacher_ckpt=/r/outputs/artifacts/sample/main.ckpt" in draft.overrides
    # `python evaluate.py decoder=rsd trials=50`, as written, reads those checkpoints in LIBERO
    evaluate = compose_config(
        "evaluate", ["decoder=rsd", "trials=50", "paths.root_dir=/r"], tmp_path
    )
    assert evaluate.env.kind == "libero" and evaluate.trials == 50
    assert evaluate.ckpt.main == "/r/outputs/artifacts/sample/main.ckpt"
    assert evaluate.data.path == cfg.store.replace("${paths.root_dir}", "/r")
    libero = next(s for s in stages if s.name == "libero_rsd_agreement")
    assert (
        "env=libero" in libero.overrides and "decoder.acceptance.threshold=0.7" in libero.overrides
    )
    assert "eval.restart=true" in libero.overrides


def test_finished_stage_is_skipped_unless_its_command_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(quickstart, "ROOT", tmp_path)
    (tmp_path / "ok.py").write_text("print('fine')\n")
    stage = quickstart.Stage("train_main", "ok.py", ["a=1"])
    assert quickstart.run_stage(stage, tmp_path, force=False) > 0
    assert quickstart.run_stage(stage, tmp_path, force=False) == 0.0  # same command: skipped
    changed = quickstart.Stage("train_main", "ok.py", ["a=2"])
    assert quickstart.run_stage(changed, tmp_path, force=False) > 0  # other settings: runs again
    assert "a=2" in (tmp_path / "train_main" / ".done").read_text()


def test_a_finished_stage_runs_again_when_its_demos_changed(tmp_path, monkeypatch):
    """Recollected demos (same folder, same command) re-run the stages that read them."""
    monkeypatch.setattr(quickstart, "ROOT", tmp_path)
    (tmp_path / "ok.py").write_text("print('fine')\n")
    demos = tmp_path / "demos"
    demos.mkdir()
    (demos / "task_demo.hdf5").write_bytes(b"first collection")
    stage = quickstart.Stage("extract", "ok.py", ["a=1"])
    before = quickstart.demos_fingerprint(demos)
    assert quickstart.run_stage(stage, tmp_path, False, before) > 0
    assert quickstart.run_stage(stage, tmp_path, False, quickstart.demos_fingerprint(demos)) == 0
    (demos / "task_demo.hdf5").write_bytes(b"second collection")
    after = quickstart.demos_fingerprint(demos)
    assert after != before and len(after) == 64
    assert quickstart.run_stage(stage, tmp_path, False, after) > 0  # runs again
    assert quickstart.demos_fingerprint(tmp_path / "missing") == ""
    cfg = compose_config("quickstart", [f"work_dir={tmp_path}"], tmp_path)
    extract = next(s for s in quickstart.plan(cfg) if s.name == "extract")
    assert "overwrite=true" in extract.overrides and extract.reads_demos


def test_a_failure_names_the_stage_and_leaves_no_marker(tmp_path, monkeypatch):
    import pytest

    monkeypatch.setattr(quickstart, "ROOT", tmp_path)
    (tmp_path / "fail.py").write_text("import sys; sys.exit(3)\n")
    with pytest.raises(RuntimeError, match="`boom` failed \\(exit 3\\)"):
        quickstart.run_stage(quickstart.Stage("boom", "fail.py", []), tmp_path, force=False)
    assert not (tmp_path / "boom" / ".done").exists()


def speed(ratio: float) -> dict:
    """A speed entry of rsdvla.decoding.timing.paired_speed (ratio, interval, reference, clock)."""
    return {
        "ratio": ratio,
        "ci95": [ratio - 0.1, ratio + 0.1],
        "reference": "main_only",
        "clock_name": "thread CPU",
    }


def test_report_merges_offline_and_libero_summaries(tmp_path):
    (tmp_path / "offline_rsd").mkdir()
    (tmp_path / "libero_rsd").mkdir()
    (tmp_path / "offline_rsd" / "summary.json").write_text(
        json.dumps(
            {
                "speed": {"main_only": speed(1.3)},
                "mean_accepted_layers": 2.5,
                "acceptance_per_layer": [0.9, 0.8, 0.7],
                "action_mse": 0.01,
            }
        )
    )
    (tmp_path / "libero_rsd" / "summary.json").write_text(
        json.dumps(
            {
                "success_rate": 0.75,
                "success_ci95": [0.5, 0.9],
                "episodes": 20,
                "speed": {"main_only": speed(1.2)},
            }
        )
    )
    (row,) = collect_rows(Path(tmp_path), ["rsd"])
    assert (
        row["success_rate"] == 0.75
        and row["offline_speedup"] == 1.3
        and row["libero_speedup"] == 1.2
    )
    assert row["acceptance_per_layer"] == [0.9, 0.8, 0.7] and row["action_mse"] == 0.01
    assert row["offline_speedup_ci_low"] == 1.2 and row["offline_speedup_reference"] == "main_only"


def test_oft_smoke_plan_runs_every_stage_with_the_oft_backbone(tmp_path):
    """``experiment=oft_smoke``: collect with cameras first, the OFT backbone in extraction and in
    LIBERO, training on the store's width; every stage's command composes under its own script."""
    cfg = compose_config(
        "quickstart",
        ["experiment=oft_smoke", "backbone.checkpoint=/ckpt", f"work_dir={tmp_path}"],
        tmp_path,
    )
    stages = quickstart.plan(cfg)
    names = [s.name for s in stages]
    assert names[:2] == ["collect", "extract"] and "train_draft" in names
    # one RSD decoder: the quickstart's other decoders are switched off (null)
    assert [n for n in names if n.startswith(("offline_", "libero_"))] == [
        "offline_rsd_agreement",
        "libero_rsd_agreement",
    ]
    collect, extract = stages[0], stages[1]
    assert "cameras=true" in collect.overrides and f"out={tmp_path}/demos" in collect.overrides
    assert f"demos={tmp_path}/demos" in extract.overrides
    for stage in stages:
        if stage.name == "extract" or stage.name.startswith("libero_"):
            for setting in (
                "backbone=openvla_oft",
                "backbone.checkpoint=/ckpt",
                "backbone.pooling=action",
                "backbone.attention=bidirectional",
                "backbone.proprio_projector=auto",
            ):
                assert setting in stage.overrides, (stage.name, setting)
        if stage.name.startswith("train_"):
            assert (
                "data=libero_hidden" in stage.overrides
                and "data.hidden_dim=4096" in stage.overrides
            )
        config = {
            "collect.py": "collect",
            "extract.py": "extract",
            "train.py": "train",
            "evaluate.py": "evaluate",
        }[stage.script]
        composed = compose_config(config, list(stage.overrides), tmp_path)
        if config == "extract":
            assert composed.backbone.checkpoint == "/ckpt" and composed.backbone.pooling == "action"
        if stage.name.startswith("libero_"):
            assert composed.backbone.checkpoint == "/ckpt" and composed.env.kind == "libero"
    assert cfg.smoke is True
