"""LIBERO env wrapper: conversions on hand-computed values, the observation pipeline, config,
errors, and a short sim run."""

import math
from pathlib import Path

import numpy as np
import pytest

from rsdvla.backbones.preprocessing import policy_image
from rsdvla.envs import libero
from rsdvla.envs.conversions import (
    binarize_gripper,
    invert_gripper_action,
    normalize_gripper_action,
    object_state_from_names,
    proprio,
    quat2axisangle,
)
from rsdvla.evaluation.libero.rollout import policy_observation
from rsdvla.policy import batch_observation

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


def test_quat2axisangle_batch_matches_scipy_rotation():
    rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    rng = np.random.default_rng(0)
    quats = rng.normal(size=(200, 4))
    quats /= np.linalg.norm(quats, axis=1, keepdims=True)
    ours = quat2axisangle(quats)
    assert ours.shape == (200, 3)
    for q, rotvec in zip(quats, ours, strict=True):  # the batch equals the one-by-one result
        np.testing.assert_allclose(quat2axisangle(q), rotvec, rtol=1e-12, atol=1e-12)
    # an independent computation: the same rotation as scipy's, for w < 0 too (not canonicalized)
    np.testing.assert_allclose(
        rotation.from_rotvec(ours).as_matrix(), rotation.from_quat(quats).as_matrix(), atol=1e-9
    )
    positive = quats[:, 3] >= 0  # scipy's rotation vector has angle <= pi: ours equals it there
    np.testing.assert_allclose(
        ours[positive], rotation.from_quat(quats[positive]).as_rotvec(), atol=1e-9
    )
    flipped = quat2axisangle(-quats[positive])  # -q: angle 2*pi - theta about the flipped axis
    np.testing.assert_allclose(
        np.linalg.norm(flipped, axis=1),
        2 * np.pi - np.linalg.norm(ours[positive], axis=1),
        atol=1e-9,
    )
    with pytest.raises(ValueError, match=r"quaternions \[\.\.\., 4\]"):
        quat2axisangle(np.zeros(3))


def test_quat2axisangle_equals_robosuites_copy_in_openvla_oft():
    """Against the function OpenVLA-OFT copies (robosuite's `transform_utils.quat2axisangle`),
    including a rotation so small that its `den` is tiny but not zero (no early zero return)."""
    transform_utils = pytest.importorskip("robosuite.utils.transform_utils")
    rng = np.random.default_rng(1)
    quats = list(rng.normal(size=(50, 4))) + [np.array([1e-7, 0.0, 0.0, 1.0])]
    for q in quats:
        q = q / np.linalg.norm(q)
        np.testing.assert_allclose(
            quat2axisangle(q), transform_utils.quat2axisangle(q.copy()), rtol=1e-9, atol=1e-15
        )


def test_policy_image_rotates_once_jpeg_and_lanczos():
    raw = np.zeros((256, 256, 3), np.uint8)
    raw[:128] = (255, 0, 0)  # as rendered (upside down): red on top, blue at the bottom
    raw[128:] = (0, 0, 255)
    out = policy_image(raw)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    top, bottom = out[:100].reshape(-1, 3).mean(0), out[124:].reshape(-1, 3).mean(0)
    assert top[2] > 200 > top[0] and bottom[0] > 200 > bottom[2]  # upright: blue on top
    frame = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(policy_image(frame, 8, jpeg=False), frame[::-1, ::-1])
    assert not np.array_equal(policy_image(frame, 8), frame[::-1, ::-1])  # JPEG is lossy
    with pytest.raises(ValueError, match=r"policy_image: expected one \[h, w, 3\] uint8"):
        policy_image(frame.astype(np.float32))


def _bare_env(image_size: int = 224) -> libero.LiberoEnv:
    """A LiberoEnv without a simulator, enough to call its observation conversion."""
    env = libero.LiberoEnv.__new__(libero.LiberoEnv)
    env.cameras, env.image_size, env.object_names = True, image_size, []
    return env


def _raw_obs(agentview: np.ndarray, wrist: np.ndarray) -> dict:
    return {
        "robot0_eef_pos": np.zeros(3),
        "robot0_eef_quat": np.array([0.0, 0.0, 0.0, 1.0]),
        "robot0_gripper_qpos": np.zeros(2),
        "agentview_image": agentview,
        "robot0_eye_in_hand_image": wrist,
    }


def test_rollout_images_reach_the_backbone_rotated_exactly_once():
    """Env wrapper -> rollout -> policy batch -> backbone: the model sees the frame upright.

    Catches a second rotation anywhere downstream of the env (the old backbone rotated again)."""
    from rsdvla.backbones import TinyVLABackbone

    raw = np.zeros((256, 256, 3), np.uint8)
    raw[:128], raw[128:] = (255, 0, 0), (0, 0, 255)  # upside down: red on top
    obs = _bare_env()._observation(_raw_obs(raw, raw.copy()))
    assert set(obs) >= {"primary", "wrist", "proprio", "object_state"}
    assert "agentview" not in obs  # one name per camera
    batch = batch_observation(policy_observation(obs, "pick it up"))
    backbone = TinyVLABackbone(center_crop=True)
    for key in ("primary", "wrist"):
        (image,) = backbone.prepare_images(batch[key])
        seen = np.asarray(image)
        top, bottom = seen[:100].reshape(-1, 3).mean(0), seen[124:].reshape(-1, 3).mean(0)
        assert top[2] > 200 > top[0] and bottom[0] > 200 > bottom[2], key
    with pytest.raises(ValueError, match=r"expected a \[224, 224, 3\] policy image.*policy_image"):
        backbone.prepare_images(raw[None])  # a raw frame never reaches the model unprepared


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
        assert "primary" not in obs and "wrist" not in obs
        np.testing.assert_allclose(obs["object_state"][:3], obs["alphabet_soup_1_pos"], rtol=1e-6)
        start = obs["robot0_eef_pos"].copy()
        for _ in range(5):
            obs, done, info = env.step([0.5, 0, 0, 0, 0, 0, -1])
            assert done is False and isinstance(info, dict)
        assert obs["robot0_eef_pos"][0] > start[0] + 0.01  # +x action moves the gripper along +x
        with pytest.raises(ValueError, match="7 values"):
            env.step([0.0] * 6)


class RecordingLiberoEnv:
    """Stands in for LIBERO's env class: records construction, seeding and every call."""

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        self.objects_dict, self.obj_of_interest = {}, []

    def seed(self, seed):
        self.calls.append(("seed", seed))

    def reset(self):
        self.calls.append(("reset",))

    def set_init_state(self, state):
        self.calls.append(("set_init_state", float(state[0])))

    def step(self, action):
        self.calls.append(("step", list(action)))
        raw = {"robot0_eef_pos": np.zeros(3), "robot0_eef_quat": np.array([0.0, 0, 0, 1])}
        return {**raw, "robot0_gripper_qpos": np.zeros(2)}, 0.0, False, {}


def test_runner_envs_follow_openvla_oft_seed_render_and_wait_steps(monkeypatch):
    """Through the evaluation's env factory (global seed 7): env.seed(0) once, a 256 px render,
    then per episode reset, set_init_state and 10 no-op steps with the gripper open."""
    from rsdvla.evaluation.libero.runner import LiberoEnvFactory, LiberoEvalSettings

    task = libero.LiberoTask("libero_spatial", 3, "t", "do it", "/x.bddl", np.arange(50.0)[:, None])
    monkeypatch.setattr(libero, "get_task", lambda suite, task_id: task)
    monkeypatch.setattr(
        libero, "_import_libero", lambda: (None, None, RecordingLiberoEnv, RecordingLiberoEnv)
    )
    settings = LiberoEvalSettings(suite="libero_spatial", seed=7, cameras=False)
    env = LiberoEnvFactory().make("libero_spatial", 3, settings)
    inner = env.env
    assert inner.calls == [("seed", 0)]
    assert inner.kwargs["camera_heights"] == inner.kwargs["camera_widths"] == 256
    env.reset(52)  # initial state 52 mod 50
    assert inner.calls[1:3] == [("reset",), ("set_init_state", 2.0)]
    assert inner.calls[3:] == [("step", [0, 0, 0, 0, 0, 0, -1])] * 10
    assert env.task.max_steps == 220
