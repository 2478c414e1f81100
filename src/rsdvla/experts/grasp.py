"""Choosing a top-down grasp yaw that fits the gripper opening and keeps the hand off neighbours.

Panda hand geometry relative to the end-effector site (measured in LIBERO, top-down pose; "along"
is the finger closing axis): palm collision box about +-0.105 m along x +-0.035 m across, its
bottom 0.024 m above the site; fingers 0.032-0.068 m along, +-0.013 m across, bottoms 0.013 m below.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rsdvla.experts.geometry import ObjectBox, footprint, rectangles_overlap

HAND_HALF = np.array([0.035, 0.108])  # [across, along] the finger axis
HAND_BOTTOM_ABOVE_EEF = 0.024
FINGER_BOTTOM_BELOW_EEF = 0.013
FINGER_HALF = np.array([0.014, 0.070])  # both fingers together, fully open
FINGER_PAD_HALF = 0.009  # m, half-width of a finger pad
MAX_GRASP_WIDTH = 0.068  # m: widest footprint the open fingers (about 0.077 m apart) close on


def finger_axis(yaw: float) -> np.ndarray:
    """World direction [2] the fingers close along for a top-down grasp yawed by `yaw`."""
    return np.array([-math.sin(yaw), math.cos(yaw)])


def width_along(
    box: ObjectBox, direction: np.ndarray, pad_half_width: float = FINGER_PAD_HALF
) -> float:
    """Opening (m) the fingers need to close on the object along unit `direction` [2].

    The extent along `direction` of the part of the footprint rectangle that lies in the strip
    swept by the finger pads (half-width `pad_half_width`, through the footprint center).
    """
    _, yaw, half = footprint(box)
    grid = np.linspace(-1.0, 1.0, 41)
    local = np.stack(np.meshgrid(grid * half[0], grid * half[1]), -1).reshape(-1, 2)
    rot = np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])
    points = local @ rot.T
    perpendicular = np.array([-direction[1], direction[0]])
    in_strip = np.abs(points @ perpendicular) <= pad_half_width
    return float(np.ptp(points[in_strip] @ direction))


def hand_collides(
    grasp_xy: np.ndarray,
    yaw: float,
    eef_z: float,
    obstacles: Sequence[ObjectBox],
    margin: float = 0.01,
) -> bool:
    """Whether the palm or the fingers at `grasp_xy`, `eef_z` with grasp `yaw` overlap an obstacle."""
    for box in obstacles:
        center, box_yaw, half = footprint(box)
        half = half + margin
        # rectangles are given by their first axis: the hand's first axis is "across" (yaw dir)
        if box.hi[2] > eef_z + HAND_BOTTOM_ABOVE_EEF and rectangles_overlap(
            grasp_xy, yaw, HAND_HALF, center, box_yaw, half
        ):
            return True
        if box.hi[2] > eef_z - FINGER_BOTTOM_BELOW_EEF and rectangles_overlap(
            grasp_xy, yaw, FINGER_HALF, center, box_yaw, half
        ):
            return True
    return False


def wrap_half_turn(angle: float) -> float:
    """Angle mapped to [-pi/2, pi/2) (a parallel gripper is symmetric under a half turn)."""
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def choose_grasp_yaw(
    obj: ObjectBox,
    grasp_xy: np.ndarray,
    eef_z: float,
    obstacles: Sequence[ObjectBox],
    step_deg: float = 15.0,
) -> float:
    """Top-down grasp yaw (rad, in [-pi/2, pi/2); 0 = LIBERO's start pose, fingers along world y).

    Prefers closing across the object's short side (yaw = its long-axis yaw) and, for round or
    square footprints, the start pose; among yaws whose finger opening fits, takes the first
    (closest to the preference) whose hand does not hit a neighbour. Falls back to the preference.
    """
    elongated = obj.long_width > 1.2 * obj.short_width
    preferred = wrap_half_turn(obj.long_axis_yaw) if elongated else 0.0
    steps = int(round(180 / step_deg))
    offsets = sorted(range(-steps // 2, steps // 2 + 1), key=abs)
    for k in offsets:
        yaw = wrap_half_turn(preferred + math.radians(step_deg * k))
        if elongated and width_along(obj, finger_axis(yaw)) > MAX_GRASP_WIDTH:
            continue
        if not elongated and k % (steps // 2) != 0:
            continue  # round/square: only the start pose or a quarter turn
        if not hand_collides(grasp_xy, yaw, eef_z, obstacles):
            return yaw
    return preferred
