"""Extraction end to end: store contents, tiny and state backbones, interrupt/kill and resume, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from rsdvla.backbones import StateBackbone, TinyVLABackbone
from rsdvla.backbones.preprocessing import policy_images
from rsdvla.data.libero_demos import DemoError, action_chunks, write_demo_file
from rsdvla.data.normalization import ActionNormalizer
from rsdvla.data.store import HiddenStateStore, StoreError, partial_path
from rsdvla.extract import run

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def make_demo(steps: int, rng: np.random.Generator, object_dim: int) -> dict:
    return {
        "actions": np.concatenate(
            [rng.uniform(-1, 1, (steps, 6)), rng.choice([-1.0, 1.0], (steps, 1))], 1
        ),
        "agentview_rgb": rng.integers(0, 256, (steps, 32, 32, 3), dtype=np.uint8),
        "eye_in_hand_rgb": rng.integers(0, 256, (steps, 32, 32, 3), dtype=np.uint8),
        "ee_pos": rng.normal(size=(steps, 3)),
        "ee_ori": rng.normal(size=(steps, 3)),
        "gripper_states": rng.normal(size=(steps, 2)),
        "joint_states": rng.normal(size=(steps, 7)),
        "object_state": rng.normal(size=(steps, object_dim)),
    }


def make_demo_dir(
    root: Path, lengths=((5, 11, 3), (9, 4)), seed: int = 0
) -> tuple[Path, list[dict]]:
    """Two task files with the given demo lengths; returns the dir and the raw demos in global order."""
    rng = np.random.default_rng(seed)
    demos_dir, raw = root / "demos", []
    names = [
        "pick_up_the_ketchup_and_place_it_in_the_basket_demo.hdf5",
        "put_the_bowl_on_the_plate_demo.hdf5",
    ]
    for name, file_lengths, object_dim in zip(names, lengths, (10, 14), strict=True):
        file_demos = [make_demo(n, rng, object_dim) for n in file_lengths]
        write_demo_file(demos_dir / name, file_demos)
        raw.extend(file_demos)
    return demos_dir, raw


def extract_cfg(demos, out, backbone="state", *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="extract",
            overrides=[
                f"backbone={backbone}",
                f"demos={demos}",
                f"out={out}",
                "progress=false",
                *overrides,
            ],
        )


def read_store(path: Path) -> dict:
    store = HiddenStateStore(path)
    return {**store.load(), "store": store}


def test_extract_state_store_contents(tmp_path):
    demos_dir, raw = make_demo_dir(tmp_path)
    out = tmp_path / "store.h5"
    metrics = run(extract_cfg(demos_dir, out, "state", "batch_size=4"))

    lengths = [len(d["actions"]) for d in raw]
    assert (
        metrics["samples"] == sum(lengths)
        and metrics["episodes"] == len(raw)
        and metrics["seconds"] > 0
    )
    assert out.exists() and not partial_path(out).exists()
    data = read_store(out)
    store = data["store"]
    assert data["hidden"].shape == (sum(lengths), 512) and data["hidden"].dtype == np.float16
    np.testing.assert_array_equal(data["episode"], np.repeat(np.arange(len(raw)), lengths))
    np.testing.assert_array_equal(data["step"], np.concatenate([np.arange(n) for n in lengths]))
    np.testing.assert_array_equal(data["task_id"], np.repeat([0, 0, 0, 1, 1], lengths))
    assert store.instructions == [
        "pick up the ketchup and place it in the basket",
        "put the bowl on the plate",
    ]

    normalizer = ActionNormalizer.fit(
        np.concatenate([d["actions"] for d in raw]).astype(np.float32)
    )
    expected_actions = np.concatenate(
        [normalizer.normalize(action_chunks(d["actions"].astype(np.float32))) for d in raw]
    )
    np.testing.assert_allclose(data["actions"], expected_actions, rtol=1e-5, atol=1e-6)
    assert np.all(
        data["actions"][:, :, 6]
        == np.concatenate([action_chunks(d["actions"])[:, :, 6] for d in raw])
    )
    np.testing.assert_allclose(store.normalizer.q99, normalizer.q99, rtol=1e-6)

    assert store.backbone == StateBackbone().backbone_id and store.attrs["hidden_dim"] == 512
    assert store.attrs["chunk_size"] == 8
    assert [Path(p).name for p in json.loads(store.attrs["source_files"])] == sorted(
        p.name for p in demos_dir.iterdir()
    )

    # hidden state of one step equals the backbone on that step's observation
    demo, step, row = raw[3], 2, lengths[0] + lengths[1] + lengths[2] + 2
    obs = {
        "proprio": np.concatenate([demo["ee_pos"], demo["ee_ori"], demo["gripper_states"]], 1)[
            step : step + 1
        ],
        "object_state": demo["object_state"][step : step + 1],
        "instruction": ["put the bowl on the plate"],
    }
    expected = StateBackbone().encode(obs).numpy()[0]
    np.testing.assert_allclose(
        data["hidden"][row].astype(np.float32), expected, rtol=2e-3, atol=2e-3
    )


def test_extract_tiny_backbone_matches_direct_encoding(tmp_path):
    demos_dir, raw = make_demo_dir(tmp_path, lengths=((4, 3), (5,)))
    out = tmp_path / "tiny.h5"
    metrics = run(extract_cfg(demos_dir, out, "tiny", "batch_size=3"))
    assert metrics["samples"] == 12
    data = read_store(out)
    assert data["hidden"].shape == (12, 64) and np.isfinite(data["hidden"]).all()
    assert data["store"].backbone.startswith("tiny-prismatic-h64")

    demo = raw[2]  # third episode, second file
    obs = {
        "primary": policy_images(demo["agentview_rgb"][1:2]),  # what the demo reader gives
        "wrist": policy_images(demo["eye_in_hand_rgb"][1:2]),
        "instruction": ["put the bowl on the plate"],
    }
    expected = TinyVLABackbone().encode(obs).numpy()[0]
    np.testing.assert_allclose(
        data["hidden"][7 + 1].astype(np.float32), expected, rtol=2e-3, atol=2e-3
    )


def test_interrupted_extraction_resumes_each_sample_exactly_once(tmp_path):
    demos_dir, raw = make_demo_dir(tmp_path)
    out = tmp_path / "resumed.h5"
    first = run(extract_cfg(demos_dir, out, "state", "max_episodes=2"))
    assert first["episodes"] == 2 and not out.exists() and partial_path(out).exists()

    second = run(extract_cfg(demos_dir, out, "state"))
    assert second["episodes"] == len(raw) - 2
    assert first["samples"] + second["samples"] == sum(len(d["actions"]) for d in raw)

    reference = tmp_path / "reference.h5"
    run(extract_cfg(demos_dir, reference, "state"))
    resumed, straight = read_store(out), read_store(reference)
    pairs = list(zip(resumed["episode"].tolist(), resumed["step"].tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) == len(straight["episode"])
    order = np.lexsort((resumed["step"], resumed["episode"]))
    for key in ("hidden", "actions", "episode", "step", "task_id"):
        np.testing.assert_array_equal(resumed[key][order], straight[key])


def test_finished_store_is_kept_unless_overwrite(tmp_path):
    demos_dir, _ = make_demo_dir(tmp_path, lengths=((3,), (2,)))
    out = tmp_path / "done.h5"
    run(extract_cfg(demos_dir, out, "state"))
    assert run(extract_cfg(demos_dir, out, "state"))["samples"] == 0
    assert run(extract_cfg(demos_dir, out, "state", "overwrite=true"))["samples"] == 5


def test_finished_store_of_demos_that_changed_since_is_refused(tmp_path):
    """Recollected demos in the same folder (same file names): the finished store is not reused."""
    demos_dir, _ = make_demo_dir(tmp_path, lengths=((3,), (2,)))
    out = tmp_path / "done.h5"
    run(extract_cfg(demos_dir, out, "state"))
    make_demo_dir(tmp_path, lengths=((3,), (2,)), seed=5)  # rewrites the same two files
    with pytest.raises(StoreError, match=r"already extracted, but from other demos.*action_stats"):
        run(extract_cfg(demos_dir, out, "state"))
    other_dir, _ = make_demo_dir(tmp_path / "other", lengths=((3,), (2,)))
    with pytest.raises(StoreError, match=r"other demos.*source_files.*overwrite=true"):
        run(extract_cfg(other_dir, out, "state"))
    assert run(extract_cfg(demos_dir, out, "state", "overwrite=true"))["samples"] == 5


def test_resume_with_other_demos_is_refused(tmp_path):
    demos_dir, _ = make_demo_dir(tmp_path)
    out = tmp_path / "mixed.h5"
    run(extract_cfg(demos_dir, out, "state", "max_episodes=1"))
    other_dir, _ = make_demo_dir(tmp_path / "other", seed=1)
    with pytest.raises(StoreError, match="differs from this run's demos"):
        run(extract_cfg(other_dir, out, "state"))


def test_state_backbone_on_demos_without_object_state_names_key(tmp_path):
    rng = np.random.default_rng(0)
    demo = make_demo(4, rng, 3)
    del demo["object_state"]
    path = write_demo_file(tmp_path / "d" / "no_objects_demo.hdf5", [demo])
    with pytest.raises(DemoError, match=r"lacks `obs/object_state`"):
        run(extract_cfg(path, tmp_path / "x.h5", "state"))
    assert (
        run(extract_cfg(path, tmp_path / "x.h5", "state", "backbone.object_state_dim=0"))["samples"]
        == 4
    )


@pytest.mark.integration
def test_killed_extraction_process_resumes(tmp_path):
    demos_dir, raw = make_demo_dir(tmp_path, lengths=((20, 20, 20), (20, 20, 20)))
    out = tmp_path / "killed.h5"
    args = [
        sys.executable,
        str(ROOT / "extract.py"),
        "backbone=tiny",
        f"demos={demos_dir}",
        f"out={out}",
        "batch_size=1",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.Popen(
        args,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while not partial_path(out).exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        initial = partial_path(out).stat().st_size if partial_path(out).exists() else 0
        while (
            proc.poll() is None and time.time() < deadline
        ):  # kill once the first episode lands on disk
            if partial_path(out).exists() and partial_path(out).stat().st_size > initial:
                break
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert partial_path(out).exists() and not out.exists(), (
        "the run ended before it could be killed; enlarge the demos"
    )
    with h5py.File(partial_path(out), "r") as f:
        committed = len(json.loads(f.attrs["completed_episodes"]))
    assert committed < len(raw)

    metrics = run(extract_cfg(demos_dir, out, "tiny", "batch_size=16"))
    assert metrics["episodes"] == len(raw) - committed
    data = read_store(out)
    pairs = list(zip(data["episode"].tolist(), data["step"].tolist(), strict=True))
    assert len(pairs) == len(set(pairs)) == 120
    assert sorted(set(data["episode"].tolist())) == list(range(6))
    # rows written by the killed process equal what a fresh encoding gives
    row = int(np.flatnonzero((data["episode"] == 0) & (data["step"] == 5))[0])
    obs = {
        "primary": policy_images(raw[0]["agentview_rgb"][5:6]),
        "wrist": policy_images(raw[0]["eye_in_hand_rgb"][5:6]),
        "instruction": ["pick up the ketchup and place it in the basket"],
    }
    torch.testing.assert_close(
        torch.from_numpy(data["hidden"][row].astype(np.float32)),
        TinyVLABackbone().encode(obs)[0],
        rtol=2e-3,
        atol=2e-3,
    )
