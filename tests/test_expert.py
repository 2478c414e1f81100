"""Scripted expert: geometry helpers, goal parsing, demo files, and (sim) solving + collection."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from rsdvla.experts.demos import EpisodeRecorder, merge_demo_parts, write_demo_part
from rsdvla.experts.geometry import ObjectBox, rectangles_overlap
from rsdvla.experts.grasp import choose_grasp_yaw, finger_axis, width_along, wrap_half_turn
from rsdvla.experts.scripted import _rotation_error, parse_goal

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _box(center, size, yaw=0.0, height=0.02):
    """A footprint-only ObjectBox centred at `center` [2] with extents `size` = (long, short)."""
    lo = np.array([center[0] - 0.05, center[1] - 0.05, 0.0])
    hi = np.array([center[0] + 0.05, center[1] + 0.05, height])
    return ObjectBox(np.array([*center, 0.0]), lo, hi, yaw, size[0], size[1])


def test_rectangles_overlap():
    half = np.array([0.05, 0.01])
    assert rectangles_overlap([0, 0], 0.0, half, [0.09, 0], 0.0, half)  # 0.09 < 0.05 + 0.05
    assert not rectangles_overlap([0, 0], 0.0, half, [0.11, 0], 0.0, half)
    assert not rectangles_overlap([0, 0], 0.0, half, [0, 0.03], 0.0, half)
    assert rectangles_overlap([0, 0], 0.0, half, [0, 0.03], math.pi / 2, half)  # crossing


def test_grasp_width_and_yaw():
    box = _box([0.0, 0.0], (0.08, 0.04))  # long side along x
    assert width_along(box, finger_axis(0.0)) == pytest.approx(0.04, abs=1e-9)  # fingers along y
    assert width_along(box, finger_axis(math.pi / 2)) == pytest.approx(0.08, abs=1e-9)
    assert choose_grasp_yaw(box, np.zeros(2), 0.01, []) == pytest.approx(0.0)
    # a tall can beside the palm's end at yaw 0 (as in libero_object task 1): the expert turns the hand
    neighbour = _box([0.05, -0.1], (0.062, 0.062), height=0.076)
    yaw = choose_grasp_yaw(box, np.zeros(2), 0.01, [neighbour])
    assert yaw != 0.0 and width_along(box, finger_axis(yaw)) <= 0.068
    assert wrap_half_turn(math.pi) == pytest.approx(0.0)
    assert wrap_half_turn(3 * math.pi / 4) == pytest.approx(-math.pi / 4)


def test_rotation_error_is_world_axis_angle():
    top_down = np.array([1.0, 0.0, 0.0, 0.0])
    # top-down, then 45 deg about world z
    yawed = np.array([math.cos(math.pi / 8), math.sin(math.pi / 8), 0.0, 0.0])
    # rotating `top_down` onto itself needs nothing
    np.testing.assert_allclose(_rotation_error(top_down, top_down), 0.0, atol=1e-12)
    err = _rotation_error(yawed, top_down)
    assert np.linalg.norm(err) == pytest.approx(math.pi / 4, abs=1e-9)
    np.testing.assert_allclose(np.abs(err) / np.linalg.norm(err), [0, 0, 1], atol=1e-9)


def _fake_env(goal):
    inner = SimpleNamespace(
        parsed_problem={"goal_state": goal},
        objects_dict={"milk_1": None, "basket_1": None},
        bddl_file_name="task.bddl",
    )
    return SimpleNamespace(env=inner)


def test_parse_goal():
    goal = parse_goal(_fake_env([["In", "milk_1", "basket_1_contain_region"]]))
    assert (goal.predicate, goal.obj, goal.target) == ("in", "milk_1", "basket_1_contain_region")
    with pytest.raises(ValueError, match="one \\(In obj target\\)"):
        parse_goal(_fake_env([["open", "drawer_1"]]))


def _fake_obs(t, images=False):
    obs = {
        "robot0_eef_pos": np.array([t, 0.0, 0.2]),
        "robot0_eef_quat": np.array([1.0, 0.0, 0.0, 0.0]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
        "robot0_joint_pos": np.full(7, t),
        "object_state": np.arange(14, dtype=np.float32) + t,
    }
    if images:
        obs["agentview_image"] = np.full((8, 8, 3), t, np.uint8)
        obs["robot0_eye_in_hand_image"] = np.full((8, 8, 3), t, np.uint8)
    return obs


def test_demo_file_layout(tmp_path):
    parts = []
    for i, steps in enumerate((3, 5)):
        rec = EpisodeRecorder(images=(i == 0), states=True)
        for t in range(steps):
            rec.record(_fake_obs(t, images=(i == 0)), np.full(7, t), np.arange(4.0) + t)
        parts.append(tmp_path / f"demo_{i}.hdf5")
        write_demo_part(parts[-1], rec.arrays(), {"attempt": i, "init_state_index": i})
    out = tmp_path / "task_demo.hdf5"
    total = merge_demo_parts(parts, out, {"problem_info": {"language_instruction": "do it"}})
    assert total == 8 and not list(tmp_path.glob("*.tmp"))
    with h5py.File(out, "r") as f:
        data = f["data"]
        assert json.loads(data.attrs["problem_info"])["language_instruction"] == "do it"
        assert data.attrs["num_demos"] == 2 and data.attrs["total"] == 8
        demo = data["demo_1"]
        assert demo["actions"].shape == (5, 7) and demo["actions"].dtype == np.float32
        assert demo["obs/ee_pos"].shape == (5, 3) and demo["obs/ee_ori"].shape == (5, 3)
        np.testing.assert_allclose(demo["obs/ee_ori"][0], [math.pi, 0, 0], rtol=1e-6)
        assert demo["obs/gripper_states"].shape == (5, 2)
        assert demo["obs/joint_states"].shape == (5, 7)
        assert demo["obs/object_state"].shape == (5, 14)
        assert demo["states"].dtype == np.float64 and demo["dones"][-1] == 1
        assert "agentview_rgb" not in demo["obs"]
        assert data["demo_0/obs/agentview_rgb"].shape == (3, 8, 8, 3)
        assert demo.attrs["attempt"] == 1 and demo.attrs["num_samples"] == 5


@pytest.mark.sim
def test_expert_solves_a_libero_object_task():
    pytest.importorskip("libero")
    from rsdvla.envs.libero import LiberoEnv
    from rsdvla.experts import PickPlaceExpert

    with LiberoEnv("libero_object", 0, cameras=False) as env:
        obs = env.reset(0)
        expert = PickPlaceExpert()
        expert.reset(env, obs)
        assert expert.goal.obj == "alphabet_soup_1"
        done = False
        for _ in range(env.task.max_steps):
            action = expert.act(obs)
            assert action.shape == (7,) and np.all(np.abs(action) <= 1.0)
            obs, done, _ = env.step(action)
            if done:
                break
        assert done, f"expert stopped in phase {expert.phase.name}"


def _collect_cfg(out, *overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "collect",
            overrides=[
                f"out={out}",
                "tasks=[5]",
                "progress=false",
                "save_states=false",
                *overrides,
            ],
        )


@pytest.mark.sim
def test_collect_writes_libero_file_and_resumes(tmp_path, monkeypatch):
    pytest.importorskip("libero")
    import rsdvla.experts.demos as demos
    from rsdvla.collect import run

    cfg = _collect_cfg(tmp_path, "episodes_per_task=2")
    real_merge = demos.merge_demo_parts

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after the demos, before the final file

    monkeypatch.setattr(demos, "merge_demo_parts", killed)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    partial = next(tmp_path.glob("*.partial"))
    assert len(list(partial.glob("demo_*.hdf5"))) == 2
    assert not list(tmp_path.glob("*_demo.hdf5"))

    monkeypatch.setattr(demos, "merge_demo_parts", real_merge)
    metrics = run(cfg)  # resumes: no new episodes, just the merge
    assert metrics["demos"] == 2 and metrics["attempts"] == 2
    final = next(tmp_path.glob("*_demo.hdf5"))
    assert not partial.exists()
    with h5py.File(final, "r") as f:
        data = f["data"]
        assert json.loads(data.attrs["problem_info"])["language_instruction"] == (
            "pick up the tomato sauce and place it in the basket"
        )
        assert json.loads(data.attrs["env_args"])["env_kwargs"]["has_offscreen_renderer"] is False
        assert sorted(data) == ["demo_0", "demo_1"]
        assert [data[d].attrs["attempt"] for d in ("demo_0", "demo_1")] == [0, 1]
        actions = data["demo_0/actions"][()]
        assert actions.shape[1] == 7 and set(np.unique(actions[:, -1])) <= {-1.0, 1.0}
        assert data["demo_0/obs/object_state"].shape == (len(actions), 49)
        assert "agentview_rgb" not in data["demo_0/obs"]

    again = run(cfg)  # finished task: skipped
    assert again["per_task"][5]["demos"] == 2 and again["attempts"] == 2


def test_collect_rejects_unknown_suite(tmp_path):
    from rsdvla.collect import CollectConfigError, run

    with pytest.raises(CollectConfigError, match="unknown LIBERO suite 'libero_nope'") as err:
        run(_collect_cfg(tmp_path, "suite=libero_nope"))
    assert "\n" not in str(err.value)
