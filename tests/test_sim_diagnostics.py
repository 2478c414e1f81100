"""env.diagnostics=true in the simulator: the grasp event against robosuite's own contact query."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.sim


def test_grasp_and_contact_match_the_simulators_own_query():
    pytest.importorskip("libero")
    from rsdvla.envs.libero import LiberoEnv
    from rsdvla.experts import Phase, PickPlaceExpert

    with LiberoEnv("libero_object", 0, cameras=False, diagnostics=True) as env:
        obs = env.reset(0)
        inner = env.env.env
        gripper = inner.robots[0].gripper
        target = inner.objects_dict[inner.obj_of_interest[0]]
        fingers = gripper.important_geoms["left_finger"] + gripper.important_geoms["right_finger"]
        expert = PickPlaceExpert()
        expert.reset(env, obs)
        grasps, lifted_for = [], 0
        for _ in range(env.task.max_steps):
            before = np.asarray(obs["robot0_eef_pos"], np.float64)
            action = expert.act(obs)
            obs, _, info = env.step(action)
            d = info["diagnostics"]
            assert d["grasp"] == inner._check_grasp(gripper=gripper, object_geoms=target)
            assert d["contact"] == inner.check_contact(fingers, target)
            assert d["gripper_command"] == action[6]
            q = obs["robot0_gripper_qpos"]
            assert d["finger_width"] == pytest.approx(q[0] - q[1], abs=1e-6)
            speed = np.linalg.norm(obs["robot0_eef_pos"] - before) / inner.control_timestep
            assert d["ee_speed"] == pytest.approx(speed, abs=1e-5)
            grasps.append(d["grasp"])
            lifted_for += expert.phase >= Phase.LIFT
            if lifted_for > 5:
                break
    assert not grasps[0] and any(grasps), "the expert's grasp was never seen as a grasp"
    assert grasps[-1], "the object is held while lifting"


def test_a_replayed_simulator_episode_reproduces_its_record(tmp_path):
    """evaluate.py's run on a tiny stack (lossy RSD, main-only baseline), then compare's replay
    of that episode through the runner from the run's saved Hydra config: same record."""
    pytest.importorskip("libero")
    from helpers_ckpt import write_tiny_checkpoints
    from omegaconf import OmegaConf
    from test_libero_runner import eval_config

    from rsdvla.backbones import StateBackbone
    from rsdvla.evaluate import run
    from rsdvla.evaluation.libero.replay import check_reproduced, replay_run
    from rsdvla.evaluation.reports.compare import load_run

    ckpts = write_tiny_checkpoints(tmp_path / "ck", 512, backbone=StateBackbone().backbone_id)
    overrides = [
        "env.suite=libero_object",
        "env.task_ids=[0]",
        "env.max_steps=12",
        "trials=1",
        "env.first_trial=3",
        "decoder/acceptance=agreement",
        "decoder.acceptance.threshold=0.0",
    ]
    cfg = eval_config(tmp_path, ckpts, overrides)
    run(cfg)
    (tmp_path / "run" / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")
    original = load_run(tmp_path / "run")
    (record,) = original.records
    assert "divergence" in record and len(record["hidden_shift"]) == 2
    replayed = replay_run(original, {("libero_object", 0, 3)}, tmp_path / "replay")
    assert check_reproduced(original.records, replayed) == []
    assert replayed[0]["diagnostics"]["chunk"] == [0] * 8 + [1] * 4
    assert list((tmp_path / "replay" / "videos").iterdir())
