"""Evaluation plans never overlap the training demos' initial states unless asked, never wrap
past the suite's 50 fixed states unless asked, and repeats do not narrow the intervals."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
import torch
from conftest import compose_config
from helpers_ckpt import write_tiny_checkpoints
from omegaconf import open_dict

from rsdvla.checkpoints import stamp
from rsdvla.evaluation.libero.runner import LiberoEvalSettings, check_training_states
from rsdvla.evaluation.reports.aggregate import success_block, wilson_interval

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "libero_object"


def test_a_plan_past_the_50_initial_states_is_refused_unless_repeats_are_asked_for():
    with pytest.raises(
        ValueError, match=r"env\.first_trial=50, trials=1 .* env\.allow_repeats=true"
    ):
        LiberoEvalSettings(first_trial=50, trials=1)
    with pytest.raises(
        ValueError, match=r"env\.first_trial=0, trials=60 .*50 fixed initial states"
    ):
        LiberoEvalSettings(first_trial=0, trials=60)
    assert LiberoEvalSettings(first_trial=0, trials=60, allow_repeats=True).trials == 60
    assert LiberoEvalSettings(first_trial=25, trials=25).trials == 25


def test_unclear_trial_and_task_values_are_one_line():
    for override, field in (("trials=ten", "trials"), ("env.task_ids=abc", "env.task_ids")):
        cfg = compose_config("evaluate", [override], Path("/tmp"))
        with pytest.raises(ValueError, match=rf"^{field}=.*: must be"):
            LiberoEvalSettings.from_config(cfg)


def test_a_plan_on_the_training_demos_states_is_refused_unless_allowed():
    store = {"path": "s.h5", "fixed_initial_states": list(range(25))}
    with pytest.raises(
        ValueError,
        match=r"env\.first_trial=0.*initial states 0\.\.24.*env\.allow_training_states=true",
    ):
        check_training_states(LiberoEvalSettings(trials=50), store, "main.ckpt")
    check_training_states(LiberoEvalSettings(trials=25, first_trial=25), store, "main.ckpt")
    check_training_states(
        LiberoEvalSettings(trials=50, allow_training_states=True), store, "main.ckpt"
    )
    check_training_states(LiberoEvalSettings(trials=50), {"fixed_initial_states": []}, "main.ckpt")
    with pytest.raises(ValueError, match=r"initial states 0\.\.19 "):  # 40..69 wraps onto 0..19
        check_training_states(
            LiberoEvalSettings(trials=30, first_trial=40, allow_repeats=True), store, "main.ckpt"
        )


def test_repeats_are_counted_as_independent_initial_states_not_episodes():
    once = [
        {
            "suite": "s",
            "task_id": 0,
            "trial": k,
            "init_state_index": k,
            "success": k % 2 == 0,
            "steps": 1,
        }
        for k in range(10)
    ]
    twice = once + [{**r, "trial": r["trial"] + 50} for r in once]
    block = success_block(twice)
    assert block["episodes"] == 20 and block["independent_initial_states"] == 10
    assert block["repeated_episodes"] == 10
    assert block["success_ci95"] == pytest.approx(list(wilson_interval(5, 10)))
    assert success_block(once)["success_ci95"] == pytest.approx(list(wilson_interval(5, 10)))


def test_extraction_records_the_fixed_states_the_demos_started_from(tmp_path):
    import rsdvla.extract
    from rsdvla.checkpoints import store_identity
    from rsdvla.data.store import HiddenStateStore

    first = sorted(SAMPLE.glob("*.hdf5"))[0]
    with h5py.File(first, "r") as f:  # read independently of the extraction code
        expected = sorted({int(f["data"][d].attrs["init_state_index"]) for d in f["data"]} - {-1})
    cfg = compose_config(
        "extract", [f"demos={first}", f"out={tmp_path / 's.h5'}", "progress=false"], tmp_path
    )
    rsdvla.extract.run(cfg)
    store = HiddenStateStore(tmp_path / "s.h5")
    assert json.loads(store.attrs["fixed_initial_states"]) == expected
    assert store_identity(store)["fixed_initial_states"] == expected


def test_evaluate_refuses_a_libero_plan_on_training_states_before_any_episode(
    tmp_path, monkeypatch
):
    import rsdvla.evaluate as evaluate
    from rsdvla.backbones import StateBackbone

    ckpts = write_tiny_checkpoints(tmp_path / "ck", 512, backbone=StateBackbone(seed=0).backbone_id)
    for kind in ("main", "draft"):
        ckpt = torch.load(ckpts[kind], weights_only=True)
        ckpt["hyper_parameters"]["lineage"]["store"]["fixed_initial_states"] = list(range(25))
        torch.save(stamp(ckpt), ckpts[kind])
    monkeypatch.setattr("rsdvla.evaluation.libero.runner.run_libero", lambda cfg, stack: {"ran": 1})

    def config(*overrides):
        cfg = compose_config(
            "evaluate",
            ["backbone=state", "decoder=rsd", "device=cpu", *overrides],
            tmp_path / "run",
        )
        with open_dict(cfg):
            cfg.ckpt = {kind: str(p) for kind, p in ckpts.items()}
        return cfg

    with pytest.raises(ValueError, match=r"env\.first_trial"):
        evaluate.run(config("trials=50"))
    assert evaluate.run(config("trials=25", "env.first_trial=25")) == {"ran": 1}
    assert evaluate.run(config("trials=50", "env.allow_training_states=true")) == {"ran": 1}
