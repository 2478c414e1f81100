"""Per-step simulator signals of a LIBERO episode (``LiberoEnv(..., diagnostics=True)``).

Each ``env.step`` puts ``info["diagnostics"]`` = ``{ee_speed, gripper_command, finger_width,
grasp, contact}``:

- ``ee_speed``: end-effector speed, m/s (``robot0_eef_pos`` change over the control period);
- ``gripper_command``: the action's gripper value (LIBERO convention: -1 open, +1 close);
- ``finger_width``: distance between the two finger joints, m (``robot0_gripper_qpos[0] - [1]``);
- ``contact``: either finger touches the task's object of interest (MuJoCo's contact list);
- ``grasp``: both finger pads touch it, the same definition as robosuite's ``_check_grasp``.

The object of interest is the first of the task's ``obj_of_interest`` (its bddl: the object to
pick). Geom ids are looked up again after every reset (robosuite may rebuild the model). Cost:
one pass over the ``ncon`` active contacts per step, vectorized.
"""

from __future__ import annotations

import numpy as np

PAD_GROUPS = ("left_fingerpad", "right_fingerpad")
FINGER_GROUPS = ("left_finger", "right_finger")


def inner_env(env):
    """The robosuite env under LIBERO's wrapper (``ControlEnv.env``) or ``env`` itself."""
    return getattr(env, "env", env)


def object_of_interest(env) -> str:
    """Name of the task's object to manipulate: the first ``obj_of_interest`` of its bddl."""
    inner = inner_env(env)
    names = [n for n in getattr(inner, "obj_of_interest", []) if n in inner.objects_dict]
    if not names:
        raise ValueError(
            f"{type(inner).__name__}: the task names no object of interest in objects_dict; "
            "env.diagnostics=true needs LIBERO's obj_of_interest (its bddl)"
        )
    return names[0]


class StepDiagnostics:
    """``reset(raw_obs)`` at each episode start, then ``step(raw_obs, action) -> dict`` per step."""

    def __init__(self, env):
        self.env = inner_env(env)
        self.object = object_of_interest(env)
        self.dt = float(self.env.control_timestep)
        self._previous_eef: np.ndarray | None = None

    def _geom_ids(self, names) -> np.ndarray:
        model = self.env.sim.model
        return np.array(sorted(model.geom_name2id(n) for n in names), dtype=np.int64)

    def reset(self, raw: dict) -> None:
        gripper = self.env.robots[0].gripper
        self.pads = [self._geom_ids(gripper.important_geoms[g]) for g in PAD_GROUPS]
        self.fingers = self._geom_ids(
            [n for g in FINGER_GROUPS for n in gripper.important_geoms[g]]
        )
        self.object_geoms = self._geom_ids(self.env.objects_dict[self.object].contact_geoms)
        self._previous_eef = np.asarray(raw["robot0_eef_pos"], np.float64).copy()

    def touching(self) -> tuple[bool, bool]:
        """``(contact, grasp)`` from the active contacts: any finger / both pads on the object."""
        data = self.env.sim.data
        n = int(data.ncon)
        if n == 0:
            return False, False
        g1 = np.asarray(data.contact.geom1[:n])
        g2 = np.asarray(data.contact.geom2[:n])
        on_object = np.isin(g1, self.object_geoms), np.isin(g2, self.object_geoms)

        def touches(ids: np.ndarray) -> bool:
            return bool(
                np.any((np.isin(g1, ids) & on_object[1]) | (np.isin(g2, ids) & on_object[0]))
            )

        return touches(self.fingers), all(touches(pad) for pad in self.pads)

    def step(self, raw: dict, action: np.ndarray) -> dict:
        eef = np.asarray(raw["robot0_eef_pos"], np.float64)
        speed = 0.0 if self._previous_eef is None else np.linalg.norm(eef - self._previous_eef)
        self._previous_eef = eef.copy()
        qpos = np.asarray(raw["robot0_gripper_qpos"], np.float64)
        contact, grasp = self.touching()
        return {
            "ee_speed": round(float(speed) / self.dt, 6),
            "gripper_command": float(action[6]),
            "finger_width": round(float(qpos[0] - qpos[1]), 6),
            "contact": contact,
            "grasp": grasp,
        }


class StepLog:
    """Collects ``info["diagnostics"]`` of an episode's steps into the record field
    ``diagnostics`` (``key -> [per step]``, plus ``chunk``: the chunk each step executed);
    nothing when the env gives none."""

    def __init__(self):
        self.steps: list[dict] = []

    def add(self, info, chunk: int | None = None) -> None:
        """One step's ``info``; ``chunk``: index of the policy chunk this step executed."""
        if isinstance(info, dict) and info.get("diagnostics") is not None:
            self.steps.append({**info["diagnostics"], "chunk": chunk})

    def fields(self) -> dict:
        if not self.steps:
            return {}
        return {"diagnostics": {key: [s.get(key) for s in self.steps] for key in self.steps[0]}}
