"""Recording expert episodes and writing them in LIBERO's demonstration HDF5 layout.

Per task, one file `<task_name>_demo.hdf5`::

    data                 attrs: problem_info (JSON: problem_name, domain_name, language_instruction),
                                env_args (JSON: type, env_name, problem_name, bddl_file, env_kwargs),
                                bddl_file_name, bddl_file_content, num_demos, total, collection (JSON)
    data/demo_<i>        attrs: num_samples, init_state_index, attempt
      actions            [T, 7] float32   what the expert commanded (gripper -1 open, +1 close)
      obs/ee_pos         [T, 3] float32   robot0_eef_pos
      obs/ee_ori         [T, 3] float32   axis-angle of robot0_eef_quat (LIBERO's ee_ori)
      obs/gripper_states [T, 2] float32   robot0_gripper_qpos
      obs/joint_states   [T, 7] float32   robot0_joint_pos
      obs/object_state   [T, S] float32   rsdvla.envs.libero.object_state (7 per object)
      obs/agentview_rgb, obs/eye_in_hand_rgb  [T, h, w, 3] uint8, as rendered (upside down),
                                              only when collected with cameras
      states             [T, X] float64   flattened MuJoCo state before each action (optional)
      rewards, dones     [T] uint8        1 at the last step only (every kept demo succeeded)

`obs[t]` is observed before `actions[t]` is applied, as in LIBERO's files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from rsdvla.backbones.preprocessing import CAMERAS
from rsdvla.envs.conversions import ee_ori

LOW_DIM_KEYS = ("ee_pos", "ee_ori", "gripper_states", "joint_states", "object_state")
IMAGE_KEYS = {
    camera.demo_key: camera.sim_key for camera in CAMERAS.values()
}  # HDF5 name -> sim key


class EpisodeRecorder:
    """Accumulates `(obs, action)` pairs of one episode; `record(obs, action, state)` per step."""

    def __init__(self, images: bool = False, states: bool = True):
        self.images = images
        self.states = states
        self.steps: dict[str, list[np.ndarray]] = {}

    def record(
        self, obs: dict[str, np.ndarray], action: np.ndarray, sim_state: np.ndarray | None = None
    ):
        row = {
            "actions": np.asarray(action, np.float32),
            "ee_pos": obs["robot0_eef_pos"],
            "ee_ori": ee_ori(obs),
            "gripper_states": obs["robot0_gripper_qpos"],
            "joint_states": obs["robot0_joint_pos"],
            "object_state": obs["object_state"],
        }
        if self.images:
            for key, source in IMAGE_KEYS.items():
                row[key] = obs[source]
        if self.states and sim_state is not None:
            row["states"] = np.asarray(sim_state, np.float64)
        for key, value in row.items():
            self.steps.setdefault(key, []).append(np.asarray(value))

    def __len__(self) -> int:
        return len(self.steps.get("actions", []))

    def arrays(self) -> dict[str, np.ndarray]:
        """Stacked arrays: `actions` [T, 7], low-dim obs float32, images uint8, `states` float64."""
        dtypes = {"states": np.float64, **{key: np.uint8 for key in IMAGE_KEYS}}
        return {
            key: np.stack(values).astype(dtypes.get(key, np.float32))
            for key, values in self.steps.items()
        }


def write_demo_part(
    path: Path, arrays: dict[str, np.ndarray], attrs: dict, compression: str | None = "gzip"
):
    """Write one demo to its own small HDF5 file (temp name, then rename): `demo/...` as in the layout."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    kwargs = {"compression": compression, "shuffle": True} if compression else {}
    # libver="latest": compact object headers and chunk indexes (halves small files)
    with h5py.File(tmp, "w", libver="latest") as f:
        demo = f.create_group("demo")
        obs = demo.create_group("obs")
        for key, value in arrays.items():
            group = demo if key in ("actions", "states") else obs
            group.create_dataset(key, data=value, **kwargs)
        steps = len(arrays["actions"])
        flags = np.zeros(steps, np.uint8)
        flags[-1] = 1
        demo.create_dataset("rewards", data=flags)
        demo.create_dataset("dones", data=flags)
        demo.attrs["num_samples"] = steps
        for key, value in attrs.items():
            demo.attrs[key] = value
    os.replace(tmp, path)


def read_part_attrs(path: Path) -> dict:
    """Attributes of a demo part file; raises OSError/KeyError for an unreadable one."""
    with h5py.File(path, "r") as f:
        return dict(f["demo"].attrs)


def merge_demo_parts(parts: list[Path], out_path: Path, data_attrs: dict) -> int:
    """Merge demo part files (in order) into one LIBERO demo file, atomically. Returns total steps."""
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    total = 0
    with h5py.File(tmp, "w", libver="latest") as out:
        data = out.create_group("data")
        for i, part in enumerate(parts):
            with h5py.File(part, "r") as f:
                f.copy(f["demo"], data, name=f"demo_{i}")
                total += int(f["demo"].attrs["num_samples"])
        for key, value in data_attrs.items():
            data.attrs[key] = value if not isinstance(value, dict | list) else json.dumps(value)
        data.attrs["num_demos"] = len(parts)
        data.attrs["total"] = total
    os.replace(tmp, out_path)
    return total
