"""Scripted pick-and-place expert for LIBERO, driven by privileged object state.

The expert reads the task's goal from its bddl (`(In obj target_region)` or `(On obj target)`),
then follows phases with a proportional controller on the end-effector position:

    approach (above the object) -> descend -> grasp (close) -> lift -> carry (above the target)
    -> lower -> release (open) -> retreat

Actions are LIBERO's OSC_POSE deltas `[7]`: translation in [-1, 1] (one unit moves the gripper
about 1.1 cm per 20 Hz step at steady state; the controller scales it by 0.05 m), rotation in
[-1, 1] (0.5 rad per unit), gripper -1 open / +1 close. The orientation is held at a top-down
grasp pose whose yaw makes the fingers close across the object's short side while the palm
clears neighbouring objects (`rsdvla.experts.grasp`). Solves libero_object; bowls (libero_spatial)
need a rim grasp that is not implemented.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from rsdvla.experts.geometry import ObjectBox, object_box, site_position
from rsdvla.experts.grasp import FINGER_BOTTOM_BELOW_EEF, choose_grasp_yaw

GRIPPER_OPEN, GRIPPER_CLOSE = -1.0, 1.0


class Phase(IntEnum):
    APPROACH = 0
    DESCEND = 1
    GRASP = 2
    LIFT = 3
    CARRY = 4
    LOWER = 5
    RELEASE = 6
    RETREAT = 7


@dataclass
class ExpertConfig:
    """Gains, heights and noise of the scripted expert (metres, action units)."""

    position_gain: float = 12.0  # action per metre of position error (then clipped)
    rotation_gain: float = 1.2  # action per radian of orientation error (then clipped)
    max_translation: float = 1.0
    hover_clearance: float = 0.06  # eef above the object's top before descending
    transit_clearance: float = 0.05  # eef above the tallest object while travelling to the object
    grasp_from_top: float = 0.03  # grasp this far below the top of tall objects
    lift_clearance: float = 0.04  # held object's bottom above the target's top while carrying
    release_above_target_floor: float = 0.06  # object bottom above a container's floor at release
    release_above_target: float = 0.015  # object bottom above the target's top (On) at release
    rim_clearance: float = 0.015  # finger bottoms above a container's rim at release
    xy_tolerance: float = 0.012  # m, to leave approach / carry
    z_tolerance: float = 0.01  # m, to leave descend / lower
    grasp_steps: int = 8  # closing the gripper
    release_steps: int = 6  # opening the gripper
    phase_timeout: int = 80  # steps before a phase gives up and moves on
    align_yaw: bool = True  # rotate so the fingers close across the object's short side
    waypoint_noise: float = 0.0  # std (m) of per-episode offsets of grasp/place points and heights
    blend: float = 0.5  # lift: start moving sideways once this fraction of the way up


@dataclass
class PickPlaceGoal:
    """What to move where: `obj` (objects_dict name), `target` (object name or site name)."""

    predicate: str  # "in" or "on"
    obj: str
    target: str


def parse_goal(env) -> PickPlaceGoal:
    """The single pick-and-place predicate of a LIBERO task's bddl goal.

    `env` is LIBERO's env wrapper (or its inner env). Raises `ValueError` naming the goal when
    the task is not a single `In`/`On` predicate over a movable object.
    """
    inner = getattr(env, "env", env)
    goal = inner.parsed_problem["goal_state"]
    if len(goal) != 1 or goal[0][0].lower() not in ("in", "on") or len(goal[0]) != 3:
        raise ValueError(
            f"scripted expert handles one (In obj target) / (On obj target) goal, got {goal} "
            f"in {inner.bddl_file_name}; fix: use a pick-and-place task (libero_object)"
        )
    predicate, obj, target = goal[0][0].lower(), goal[0][1], goal[0][2]
    if obj not in inner.objects_dict:
        raise ValueError(f"goal object '{obj}' is not a movable object of {inner.bddl_file_name}")
    return PickPlaceGoal(predicate, obj, target)


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return np.array(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ]
    )


def _quat_conj(q: np.ndarray) -> np.ndarray:
    return np.array([-q[0], -q[1], -q[2], q[3]])


def _rotation_error(target_xyzw: np.ndarray, current_xyzw: np.ndarray) -> np.ndarray:
    """World-frame axis-angle [3] rotating `current` onto `target` (shortest way)."""
    q = _quat_mul(target_xyzw, _quat_conj(current_xyzw))
    if q[3] < 0:
        q = -q
    w = min(1.0, q[3])
    s = math.sqrt(max(0.0, 1 - w * w))
    if s < 1e-8:
        return np.zeros(3)
    return q[:3] / s * 2 * math.acos(w)


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])


TOP_DOWN = np.array([1.0, 0.0, 0.0, 0.0])  # xyzw: 180 deg about x, LIBERO's start pose


class PickPlaceExpert:
    """Closed-loop scripted policy for one pick-and-place episode.

    Usage: `expert.reset(env, obs)` after `LiberoEnv.reset`, then `action = expert.act(obs)` each
    step (`obs` is `LiberoEnv`'s obs dict; `action` float64 [7]). `phase` tells where it is.
    """

    def __init__(self, config: ExpertConfig | None = None, rng: np.random.Generator | None = None):
        self.config = config or ExpertConfig()
        self.rng = rng if rng is not None else np.random.default_rng(0)

    # -- episode setup

    def reset(self, env, obs: dict[str, np.ndarray]) -> None:
        """Plan the episode from the task's goal and the object geometry in `env` (a `LiberoEnv`)."""
        cfg = self.config
        objects = env.env.env.objects_dict
        self.goal = parse_goal(env.env)
        self.obj_box: ObjectBox = object_box(env, self.goal.obj)
        self.target_name = _owner_object(self.goal.target, objects)
        self.target_box = object_box(env, self.target_name) if self.target_name else None
        self.target_site = site_position(env, self.goal.target)
        if self.target_box is None and self.target_site is None:
            raise ValueError(f"goal target '{self.goal.target}' is neither an object nor a site")
        obstacles = [object_box(env, name) for name in objects if name != self.goal.obj]
        std = cfg.waypoint_noise
        self.grasp_offset = (
            self.rng.normal(0.0, std, 3) * np.array([0.4, 0.4, 0.2]) if std else np.zeros(3)
        )
        self.place_offset = self.rng.normal(0.0, std, 2) if std else np.zeros(2)
        self.height_offset = float(abs(self.rng.normal(0.0, std))) if std else 0.0
        self.held_drop = self._grasp_height_above_bottom()  # eef z - object bottom while held
        grasp_xy = ((self.obj_box.lo + self.obj_box.hi) / 2)[:2] + self.grasp_offset[:2]
        grasp_z = self.obj_box.lo[2] + self.held_drop
        yaw = choose_grasp_yaw(self.obj_box, grasp_xy, grasp_z, obstacles) if cfg.align_yaw else 0.0
        self.target_quat = _quat_mul(_yaw_quat(yaw), TOP_DOWN)
        # heights that keep the fingers above everything on the way (transit) and near the object
        tops = [b.hi[2] for b in obstacles]
        near = [b.hi[2] for b in obstacles if _xy_distance(b, grasp_xy) < 0.14]
        self.transit_z = max(tops + [self.obj_box.hi[2]]) + cfg.transit_clearance
        self.hover_z = max([self.obj_box.hi[2] + cfg.hover_clearance] + [t + 0.04 for t in near])
        self.phase = Phase.APPROACH
        self.phase_steps = 0

    def _grasp_height_above_bottom(self) -> float:
        """Where the eef closes on the object, above its bottom (m): mid-height, or near the top of tall objects."""
        h = self.obj_box.height
        z = 0.5 * h if h < 0.09 else h - self.config.grasp_from_top
        return float(max(z, 0.01) + self.grasp_offset[2])

    # -- control

    def _move(self, obs, target: np.ndarray, gripper: float) -> np.ndarray:
        cfg = self.config
        delta = target - obs["robot0_eef_pos"]
        translation = np.clip(cfg.position_gain * delta, -cfg.max_translation, cfg.max_translation)
        rotation = np.clip(
            cfg.rotation_gain * _rotation_error(self.target_quat, obs["robot0_eef_quat"]), -1, 1
        )
        return np.concatenate([translation, rotation, [gripper]])

    def _next(self, phase: Phase) -> None:
        self.phase = phase
        self.phase_steps = 0

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """One action [7] for the current observation."""
        cfg = self.config
        eef = obs["robot0_eef_pos"]
        obj = obs[f"{self.goal.obj}_pos"]
        box = self.obj_box
        self.phase_steps += 1
        timeout = self.phase_steps > cfg.phase_timeout
        obj_xy = obj[:2] + box.center_offset[:2] + self.grasp_offset[:2]
        obj_bottom = obj[2] - box.bottom_below_origin()
        grasp_z = obj_bottom + self.held_drop
        place_xy = self._place_xy(obs)
        carry_z = self._target_top(obs) + cfg.lift_clearance + self.held_drop + self.height_offset
        release_z = self._release_height(obs)

        if self.phase == Phase.APPROACH:
            # travel above everything, drop to the pre-grasp height once nearly above the object
            xy_error = np.linalg.norm(eef[:2] - obj_xy)
            z = self.hover_z + self.height_offset if xy_error < 0.04 else self.transit_z
            if xy_error < cfg.xy_tolerance or timeout:
                self._next(Phase.DESCEND)
            return self._move(obs, np.array([*obj_xy, z]), GRIPPER_OPEN)

        if self.phase == Phase.DESCEND:
            if eef[2] - grasp_z < cfg.z_tolerance or timeout:
                self._next(Phase.GRASP)
            return self._move(obs, np.array([*obj_xy, grasp_z]), GRIPPER_OPEN)

        if self.phase == Phase.GRASP:
            if self.phase_steps >= cfg.grasp_steps:
                self._next(Phase.LIFT)
            return self._move(obs, np.array([*obj_xy, grasp_z]), GRIPPER_CLOSE)

        if self.phase == Phase.LIFT:
            # rise; move sideways once high enough, so lift and carry form one arc
            if eef[2] > grasp_z + cfg.blend * (carry_z - grasp_z) or timeout:
                self._next(Phase.CARRY)
            return self._move(obs, np.array([*eef[:2], carry_z]), GRIPPER_CLOSE)

        if self.phase == Phase.CARRY:
            if np.linalg.norm(eef[:2] - place_xy) < cfg.xy_tolerance or timeout:
                self._next(Phase.LOWER)
            return self._move(obs, np.array([*place_xy, carry_z]), GRIPPER_CLOSE)

        if self.phase == Phase.LOWER:
            if eef[2] - release_z < cfg.z_tolerance or timeout:
                self._next(Phase.RELEASE)
            return self._move(obs, np.array([*place_xy, release_z]), GRIPPER_CLOSE)

        if self.phase == Phase.RELEASE:
            if self.phase_steps >= cfg.release_steps:
                self._next(Phase.RETREAT)
            return self._move(obs, np.array([*place_xy, release_z]), GRIPPER_OPEN)

        return self._move(obs, np.array([*place_xy, carry_z]), GRIPPER_OPEN)  # RETREAT

    # -- target geometry (tracks the target object if it moves)

    def _target_shift(self, obs) -> np.ndarray:
        if self.target_box is None:
            return np.zeros(3)
        return obs[f"{self.target_name}_pos"] - self.target_box.origin

    def _place_xy(self, obs) -> np.ndarray:
        if self.target_site is not None:
            xy = self.target_site[:2] + self._target_shift(obs)[:2]
        else:
            xy = ((self.target_box.lo + self.target_box.hi) / 2)[:2] + self._target_shift(obs)[:2]
        return xy + self.place_offset

    def _target_top(self, obs) -> float:
        if self.target_box is None:
            return float(self.target_site[2])
        return float(self.target_box.hi[2] + self._target_shift(obs)[2])

    def _release_height(self, obs) -> float:
        """Eef height to open the gripper at: the held object's bottom a little above the
        container floor (`In`) or the target's top (`On`), fingers above a container's rim."""
        cfg = self.config
        if self.target_box is None:
            return float(self.target_site[2]) + cfg.release_above_target + self.held_drop
        shift = self._target_shift(obs)[2]
        top = float(self.target_box.hi[2] + shift)
        if self.goal.predicate == "on":
            return top + cfg.release_above_target + self.held_drop
        floor = float(self.target_box.lo[2] + shift)
        above_floor = floor + cfg.release_above_target_floor + self.held_drop
        return max(above_floor, top + FINGER_BOTTOM_BELOW_EEF + cfg.rim_clearance)


def _xy_distance(box: ObjectBox, xy: np.ndarray) -> float:
    """Distance from `xy` to the nearest point of a box's axis-aligned footprint."""
    gap = np.maximum(np.maximum(box.lo[:2] - xy, xy - box.hi[:2]), 0.0)
    return float(np.linalg.norm(gap))


def _owner_object(target: str, objects: dict) -> str | None:
    """The object a goal target names or belongs to (`basket_1_contain_region` -> `basket_1`)."""
    for name in sorted(objects, key=len, reverse=True):
        if target == name or target.startswith(name + "_"):
            return name
    return None
