"""Observation and action conversions for LIBERO, as OpenVLA-OFT's LIBERO evaluation does them.

Pure numpy: no simulator needed, unit-tested on hand-computed values.
Conventions: quaternions are robosuite's `(x, y, z, w)`; actions are `[7]` =
`dx dy dz drx dry drz gripper` with gripper -1 = open, +1 = close (LIBERO's convention).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

PROPRIO_DIM = 8
"""`proprio` = eef pos [3] + eef axis-angle [3] + gripper finger qpos [2]."""

OBJECT_POSE_DIM = 7
"""Each object contributes position [3] + quaternion xyzw [4] to `object_state`."""


def quat2axisangle(quat_xyzw: np.ndarray) -> np.ndarray:
    """Quaternions `(x, y, z, w)` `[..., 4]` -> axis-angle exponential coordinates `[..., 3]` (radians).

    The one conversion of the project (env observations, demo files, expert recordings). Same as
    robosuite's `transform_utils.quat2axisangle`, which OpenVLA-OFT copies
    (`experiments/robot/libero/libero_utils.py`): `w` is clipped to [-1, 1]; a rotation whose
    `sqrt(1 - w^2)` is exactly 0 (`math.isclose(den, 0.0)` with its default tolerances) gives
    zeros; the quaternion is *not* sign-canonicalized (q and -q give axis-angles of norm theta
    and 2*pi - theta, the same rotation). Unlike robosuite it works on batches and never
    modifies its input.
    """
    quat = np.asarray(quat_xyzw, dtype=np.float64)
    if quat.shape[-1:] != (4,):
        raise ValueError(f"quat2axisangle: expected quaternions [..., 4], got shape {quat.shape}")
    w = np.clip(quat[..., 3], -1.0, 1.0)
    den = np.sqrt(1.0 - w * w)
    zero = den == 0.0  # math.isclose(den, 0.0): rel_tol only, abs_tol 0 -> exactly zero
    scale = np.where(zero, 0.0, 2.0 * np.arccos(w) / np.where(zero, 1.0, den))
    return quat[..., :3] * scale[..., None]


def ee_ori(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """End-effector orientation as LIBERO's demo HDF5 stores it (`obs/ee_ori`): axis-angle [3]."""
    return quat2axisangle(obs["robot0_eef_quat"])


def proprio(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """OpenVLA-OFT's LIBERO proprio state [8] float32 from a robosuite obs dict.

    `concat(robot0_eef_pos [3], quat2axisangle(robot0_eef_quat) [3], robot0_gripper_qpos [2])`.
    """
    return np.concatenate([obs["robot0_eef_pos"], ee_ori(obs), obs["robot0_gripper_qpos"]]).astype(
        np.float32
    )


def object_state_from_names(obs: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Concatenate `{name}_pos` [3] and `{name}_quat` [4] for each name -> [7 * len(names)] float32."""
    missing = [n for n in names if f"{n}_pos" not in obs or f"{n}_quat" not in obs]
    if missing:
        raise KeyError(
            f"object_state: obs has no '<name>_pos'/'<name>_quat' for {missing}; "
            "create the env with use_object_obs=True (LIBERO's default)"
        )
    parts = [np.concatenate([obs[f"{n}_pos"], obs[f"{n}_quat"]]) for n in names]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def normalize_gripper_action(action: np.ndarray, binarize: bool = True) -> np.ndarray:
    """Map the gripper dim (last) from [0, 1] to [-1, 1]; with `binarize`, take its sign.

    As OpenVLA-OFT's `experiments/robot/robot_utils.py`: `y = 2 * x - 1`, then `np.sign(y)` (so an
    input of exactly 0.5 maps to 0). Returns a copy; works on `[..., 7]`.
    """
    out = np.array(action, dtype=np.float64, copy=True)
    out[..., -1] = 2.0 * out[..., -1] - 1.0
    if binarize:
        out[..., -1] = np.sign(out[..., -1])
    return out


def invert_gripper_action(action: np.ndarray) -> np.ndarray:
    """Flip the sign of the gripper dim (RLDS 0 = close / 1 = open -> LIBERO -1 = open / +1 = close)."""
    out = np.array(action, dtype=np.float64, copy=True)
    out[..., -1] = -out[..., -1]
    return out


def binarize_gripper(action: np.ndarray) -> np.ndarray:
    """Binarize the gripper dim of an action already in LIBERO's [-1, 1] convention: >0 -> +1, else -1.

    Used for actions from our own policies, whose gripper dim lives in [-1, 1] (LIBERO's HDF5
    convention). Unlike `np.sign` it never outputs 0. Returns a copy; works on `[..., 7]`.
    """
    out = np.array(action, dtype=np.float64, copy=True)
    out[..., -1] = np.where(out[..., -1] > 0, 1.0, -1.0)
    return out
