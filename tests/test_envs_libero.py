"""LIBERO env wrapper: conversions on hand-computed values, config, errors, and a short sim run."""

import math
from pathlib import Path

import numpy as np
import pytest

from rsdvla.envs import libero
from rsdvla.envs.conversions import (
    binarize_gripper,
    invert_gripper_action,
    normalize_gripper_action,
    object_state_from_names,
    preprocess_image,
    proprio,
    quat2axisangle,
)

S = math.sqrt(0.5)


@pytest.mark.parametrize(
    ("quat", "expected"),
    [
        ([0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0]),  # identity
        ([0.0, 0.0, S, S], [0.0, 0.0, math.pi / 2]),  # 90 deg about z
        ([1.0, 0.0, 0.0, 0.0], [math.pi, 0.0, 0.0]),  # 180 deg about x (LIBERO's top-down eef)
        ([0.0, -S, 0.0, S], [0.0, -math.pi / 2, 0.0]),  # -90 deg about y
        ([0.0, 0.0, 0.0, 1.0000001], [0.0, 0.0, 0.0]),  # w clipped to 1
        ([0.0, 0.0, -S, -S], [0.0, 0.0, -3 * math.pi / 2]),  # -q: not canonicalized (robosuite)
    ],
)
def test_quat2axisangle_hand_values(quat, expected):
    q = np.array(quat)
    before = q.copy()
    np.testing.assert_allclose(quat2axisangle(q), expected, atol=1e-7)
    np.testing.assert_array_equal(q, before)  # input untouched


def test_preprocess_image_rotates_180_and_resizes():
    same = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    rotated = preprocess_image(same, 4)
    np.testing.assert_array_equal(rotated[0, 0], same[3, 3])
    np.testing.assert_array_equal(rotated[3, 0], same[0, 3])
    assert rotated.flags["C_CONTIGUOUS"]
    constant = np.full((8, 8, 3), 200, np.uint8)
    constant[0, 0] = 0  # marks the top-left corner, which must end near the bottom-right
    resized = preprocess_image(constant, 4)
    assert resized.shape == (4, 4, 3) and resized.dtype == np.uint8
    assert resized[3, 3].mean() < resized[0, 0].mean()


def test_proprio_is_pos_axisangle_gripper():
    obs = {
        "robot0_eef_pos": np.array([0.1, -0.2, 0.3]),
        "robot0_eef_quat": np.array([0.0, 0.0, S, S]),
        "robot0_gripper_qpos": np.array([0.04, -0.04]),
    }
    out = proprio(obs)
    assert out.shape == (8,) and out.dtype == np.float32
    np.testing.assert_allclose(out, [0.1, -0.2, 0.3, 0, 0, math.pi / 2, 0.04, -0.04], rtol=1e-6)


def test_object_state_concatenates_pos_quat_in_given_order():
    obs = {
        "a_1_pos": np.array([1.0, 2, 3]),
        "a_1_quat": np.array([0.0, 0, 0, 1]),
        "b_1_pos": np.array([4.0, 5, 6]),
        "b_1_quat": np.array([1.0, 0, 0, 0]),
    }
    out = object_state_from_names(obs, ["b_1", "a_1"])
    np.testing.assert_array_equal(out, [4, 5, 6, 1, 0, 0, 0, 1, 2, 3, 0, 0, 0, 1])
    with pytest.raises(KeyError, match="c_1"):
        object_state_from_names(obs, ["c_1"])


def test_gripper_conversions_as_openvla_oft():
    a = np.zeros((4, 7))
    a[:, -1] = [0.0, 1.0, 0.7, 0.5]
    np.testing.assert_allclose(normalize_gripper_action(a, binarize=False)[:, -1], [-1, 1, 0.4, 0])
    np.testing.assert_allclose(normalize_gripper_action(a, binarize=True)[:, -1], [-1, 1, 1, 0])
    np.testing.assert_allclose(invert_gripper_action(a)[:, -1], [0, -1, -0.7, -0.5])
    assert a[2, -1] == 0.7  # copies, not in place
    b = np.zeros((4, 7))
    b[:, -1] = [0.3, -0.2, 0.0, 1.0]
    np.testing.assert_allclose(binarize_gripper(b)[:, -1], [1, -1, -1, 1])
    np.testing.assert_array_equal(binarize_gripper(b)[:, :6], 0)


def test_max_steps_per_suite():
    assert libero.MAX_STEPS == {
        "libero_spatial": 220,
        "libero_object": 280,
        "libero_goal": 300,
        "libero_10": 520,
        "libero_90": 400,
    }


def test_unknown_suite_is_a_one_line_error():
    with pytest.raises(ValueError, match="unknown LIBERO suite 'libero_foo'.*libero_object") as err:
        libero.get_task("libero_foo", 0)
    assert "\n" not in str(err.value)


def test_unknown_task_id_names_the_range():
    pytest.importorskip("libero")
    with pytest.raises(ValueError, match=r"task id 10 .*'libero_object'.*0\.\.9") as err:
        libero.get_task("libero_object", 10)
    assert "\n" not in str(err.value)


def test_ensure_libero_config_writes_and_checks(tmp_path, monkeypatch):
    pytest.importorskip("libero")
    yaml = pytest.importorskip("yaml")
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(tmp_path))
    path = libero.ensure_libero_config()
    assert path == tmp_path / "config.yaml"
    paths = yaml.safe_load(path.read_text())
    for key in ("bddl_files", "init_states", "assets"):
        assert Path(paths[key]).is_dir(), key
    assert libero.ensure_libero_config() == path  # existing, valid: kept
    paths["bddl_files"] = str(tmp_path / "missing")
    path.write_text(yaml.safe_dump(paths))
    with pytest.raises(FileNotFoundError, match="bddl_files"):
        libero.ensure_libero_config()


@pytest.mark.sim
def test_libero_env_reset_and_step_without_cameras():
    pytest.importorskip("libero")
    with libero.LiberoEnv("libero_object", 0, cameras=False) as env:
        assert env.num_initial_states == 50
        assert env.instruction == "pick up the alphabet soup and place it in the basket"
        assert env.object_names[:2] == ["alphabet_soup_1", "basket_1"]  # objects of interest first
        obs = env.reset(0)
        n_objects = len(env.object_names)
        assert obs["proprio"].shape == (8,) and obs["proprio"].dtype == np.float32
        assert obs["object_state"].shape == (7 * n_objects,)
        assert "agentview" not in obs and "wrist" not in obs
        np.testing.assert_allclose(obs["object_state"][:3], obs["alphabet_soup_1_pos"], rtol=1e-6)
        start = obs["robot0_eef_pos"].copy()
        for _ in range(5):
            obs, done, info = env.step([0.5, 0, 0, 0, 0, 0, -1])
            assert done is False and isinstance(info, dict)
        assert obs["robot0_eef_pos"][0] > start[0] + 0.01  # +x action moves the gripper along +x
        with pytest.raises(ValueError, match="7 values"):
            env.step([0.0] * 6)
