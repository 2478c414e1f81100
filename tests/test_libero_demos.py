"""LIBERO demo reader: ordering, instructions, chunks, statistics, proprio, and one-line errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from rsdvla.backbones.preprocessing import policy_image
from rsdvla.data.libero_demos import (
    DemoError,
    LiberoDemoSet,
    action_chunks,
    instruction_from_filename,
    resolve_demo_files,
    write_demo_file,
)
from rsdvla.data.normalization import ActionNormalizer


def make_demo(
    steps: int, rng: np.random.Generator, image: int = 8, object_dim: int | None = 6
) -> dict:
    demo = {
        "actions": rng.uniform(-1, 1, (steps, 7)).astype(np.float64),
        "agentview_rgb": rng.integers(0, 256, (steps, image, image, 3), dtype=np.uint8),
        "eye_in_hand_rgb": rng.integers(0, 256, (steps, image, image, 3), dtype=np.uint8),
        "ee_pos": rng.normal(size=(steps, 3)),
        "ee_ori": rng.normal(size=(steps, 3)),
        "gripper_states": rng.normal(size=(steps, 2)),
        "joint_states": rng.normal(size=(steps, 7)),
    }
    if object_dim:
        demo["object_state"] = rng.normal(size=(steps, object_dim))
    return demo


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_instruction_from_filename_follows_libero():
    assert (
        instruction_from_filename("pick_up_the_ketchup_and_place_it_in_the_basket_demo.hdf5")
        == "pick up the ketchup and place it in the basket"
    )
    assert (
        instruction_from_filename("/x/KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5")
        == "turn on the stove"
    )
    assert (
        instruction_from_filename("LIVING_ROOM_SCENE10_put_the_mug_on_the_plate_demo.hdf5")
        == "put the mug on the plate"
    )


def test_action_chunks_pad_with_last_action():
    actions = np.arange(3 * 7, dtype=np.float32).reshape(3, 7)
    chunks = action_chunks(actions, chunk=4)
    assert chunks.shape == (3, 4, 7)
    np.testing.assert_array_equal(chunks[0], actions[[0, 1, 2, 2]])
    np.testing.assert_array_equal(chunks[1], actions[[1, 2, 2, 2]])
    np.testing.assert_array_equal(chunks[2], actions[[2, 2, 2, 2]])


def test_demos_ordered_numerically_with_global_index(tmp_path, rng):
    lengths_a = [2 + i % 3 for i in range(12)]
    write_demo_file(
        tmp_path / "b_task_demo.hdf5", [make_demo(n, rng) for n in lengths_a], "Put the bowl away"
    )
    write_demo_file(
        tmp_path / "a_pick_up_the_milk_demo.hdf5", [make_demo(3, rng), make_demo(4, rng)]
    )
    demos = LiberoDemoSet(tmp_path, required_obs=("primary", "wrist", "proprio", "object_state"))

    assert [p.name for p in demos.files] == ["a_pick_up_the_milk_demo.hdf5", "b_task_demo.hdf5"]
    assert [r.demo for r in demos.demos[2:]] == [
        f"demo_{i}" for i in range(12)
    ]  # demo_10 after demo_9
    assert [r.episode for r in demos.demos] == list(range(14))
    assert demos.instructions == [
        "a pick up the milk",
        "Put the bowl away",
    ]  # file name, then problem_info
    assert [r.task_id for r in demos.demos] == [0, 0] + [1] * 12
    assert demos.num_samples == 7 + sum(lengths_a)


def test_statistics_and_episode_arrays(tmp_path, rng):
    raw = [make_demo(5, rng), make_demo(7, rng)]
    raw[1]["ee_ori"] = np.tile(
        [0.0, 0.0, np.sin(0.25), np.cos(0.25)], (7, 1)
    )  # quaternion, 0.5 rad about z
    write_demo_file(tmp_path / "t_demo.hdf5", raw, "do it")
    demos = LiberoDemoSet(tmp_path / "t_demo.hdf5", required_obs=("proprio", "object_state"))

    expected = ActionNormalizer.fit(np.concatenate([d["actions"] for d in raw]))
    fitted = demos.fit_normalizer()
    for key in ("q01", "q99", "mean", "std"):
        np.testing.assert_allclose(getattr(fitted, key), getattr(expected, key), rtol=1e-6)

    episodes = list(demos.episodes())
    assert [e.episode for e in episodes] == [0, 1]
    assert set(episodes[0].obs) == {"proprio", "object_state"}  # no pixels loaded
    np.testing.assert_allclose(episodes[0].actions, raw[0]["actions"].astype(np.float32))
    proprio = episodes[0].obs["proprio"]
    assert proprio.shape == (5, 8) and proprio.dtype == np.float32
    np.testing.assert_allclose(
        proprio,
        np.concatenate([raw[0][k] for k in ("ee_pos", "ee_ori", "gripper_states")], 1),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        episodes[1].obs["proprio"][:, 3:6], np.tile([0, 0, 0.5], (7, 1)), atol=1e-6
    )
    assert [e.episode for e in demos.episodes(skip={0})] == [1]


def test_camera_frames_become_policy_images_rotated_once(tmp_path, rng):
    demo = make_demo(2, rng, image=16)
    demo["agentview_rgb"][:, :8] = (255, 0, 0)  # raw frame as rendered: red on top,
    demo["agentview_rgb"][:, 8:] = (0, 0, 255)  # blue at the bottom (upside down)
    write_demo_file(tmp_path / "t_demo.hdf5", [demo], "do it")
    (episode,) = LiberoDemoSet(tmp_path, required_obs=("primary", "wrist")).episodes()

    primary, wrist = episode.obs["primary"], episode.obs["wrist"]
    assert primary.shape == wrist.shape == (2, 224, 224, 3) and primary.dtype == np.uint8
    top, bottom = primary[0, :100].reshape(-1, 3).mean(0), primary[0, 124:].reshape(-1, 3).mean(0)
    assert top[2] > 200 > top[0] and bottom[0] > 200 > bottom[2]  # rotated once: blue on top
    for t in range(2):  # exactly the env wrapper's function, frame by frame
        np.testing.assert_array_equal(wrist[t], policy_image(demo["eye_in_hand_rgb"][t]))
    small = LiberoDemoSet(tmp_path, required_obs=("primary",), image_size=32)
    assert next(small.episodes()).obs["primary"].shape == (2, 32, 32, 3)


def test_camera_dataset_that_is_not_frames_names_file_and_key(tmp_path, rng):
    demo = make_demo(3, rng)
    demo["agentview_rgb"] = rng.normal(size=(3, 8, 8, 3))  # float, not uint8 frames
    write_demo_file(tmp_path / "t_demo.hdf5", [demo], "do it")
    demos = LiberoDemoSet(tmp_path, required_obs=("primary",))
    with pytest.raises(
        DemoError, match=r"t_demo\.hdf5: demo `demo_0` key `obs/agentview_rgb`.*uint8"
    ):
        next(demos.episodes())


def test_missing_key_names_file_demo_key_and_fix(tmp_path, rng):
    demo = make_demo(4, rng)
    del demo["eye_in_hand_rgb"]
    path = write_demo_file(tmp_path / "x_demo.hdf5", [make_demo(4, rng), demo])
    LiberoDemoSet(path, required_obs=("primary", "proprio"))  # wrist not needed: fine
    with pytest.raises(DemoError) as err:
        LiberoDemoSet(path, required_obs=("primary", "wrist"))
    message = str(err.value)
    assert "\n" not in message
    assert (
        str(path) in message
        and "`demo_1`" in message
        and "obs/eye_in_hand_rgb" in message
        and "re-render" in message
    )


def test_mismatched_lengths_are_reported(tmp_path, rng):
    demo = make_demo(6, rng)
    demo["ee_pos"] = demo["ee_pos"][:5]
    path = write_demo_file(tmp_path / "y_demo.hdf5", [demo])
    with pytest.raises(
        DemoError, match=r"demo `demo_0` key `obs/ee_pos` has 5 steps but `actions` has 6"
    ):
        LiberoDemoSet(path, required_obs=("proprio",))


def test_missing_actions_and_truncated_and_garbage_files(tmp_path, rng):
    path = write_demo_file(tmp_path / "z_demo.hdf5", [make_demo(3, rng)])
    with h5py.File(path, "a") as f:
        del f["data/demo_0/actions"]
    with pytest.raises(DemoError, match=r"z_demo.hdf5: demo `demo_0` lacks `actions`"):
        LiberoDemoSet(path)

    full = write_demo_file(tmp_path / "full_demo.hdf5", [make_demo(30, rng, image=32)])
    truncated = tmp_path / "cut_demo.hdf5"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(DemoError) as err:
        LiberoDemoSet(truncated, required_obs=("primary",))
    assert str(truncated) in str(err.value) and "\n" not in str(err.value)
    assert "truncated" in str(err.value) and "re-render" in str(err.value)

    garbage = tmp_path / "garbage_demo.hdf5"
    garbage.write_bytes(b"not an hdf5 file")
    with pytest.raises(DemoError, match="unreadable or truncated HDF5"):
        LiberoDemoSet(garbage)


def test_missing_path_and_empty_dir(tmp_path):
    with pytest.raises(DemoError, match="does not exist"):
        resolve_demo_files(tmp_path / "nope")
    with pytest.raises(DemoError, match="no .hdf5 demo files"):
        resolve_demo_files(tmp_path)
