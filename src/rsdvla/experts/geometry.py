"""Object geometry from the MuJoCo model: world bounding boxes and footprint orientation."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

_CORNERS = np.array(list(itertools.product((-1.0, 1.0), repeat=3)))  # [8, 3]


@dataclass(frozen=True)
class ObjectBox:
    """An object's collision geometry at one instant, in world coordinates (metres).

    `origin` [3]: the body position (what `obs['{name}_pos']` reports); `lo`, `hi` [3]: the
    axis-aligned bounding box; `long_axis_yaw`: direction (rad, world z) of the footprint's long
    side; `long_width`, `short_width`: footprint extents along / across that direction.
    """

    origin: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    long_axis_yaw: float
    long_width: float
    short_width: float

    @property
    def center_offset(self) -> np.ndarray:
        """Bounding-box center minus body origin [3] (for objects whose origin is off-center)."""
        return (self.lo + self.hi) / 2 - self.origin

    @property
    def height(self) -> float:
        return float(self.hi[2] - self.lo[2])

    def top_above_origin(self) -> float:
        return float(self.hi[2] - self.origin[2])

    def bottom_below_origin(self) -> float:
        return float(self.origin[2] - self.lo[2])


def _body_subtree(model, root: int) -> set[int]:
    bodies = set()
    for body in range(model.nbody):
        b = body
        while b > 0:
            if b == root:
                bodies.add(body)
                break
            b = model.body_parentid[b]
    return bodies


def object_box(env, name: str) -> ObjectBox:
    """Bounding box and footprint of object `name` (a key of LIBERO's `objects_dict`).

    `env` is a `LiberoEnv` (or anything with `.env.env.objects_dict` and `.sim`). Uses the
    collision geoms of the object's body subtree; the footprint direction is the principal axis
    of the geoms' box corners projected on the floor.
    """
    inner = env.env.env
    sim = env.sim
    model, data = sim.model._model, sim.data._data
    root = sim.model.body_name2id(inner.objects_dict[name].root_body)
    bodies = _body_subtree(model, root)
    corners = []
    for g in range(model.ngeom):
        if model.geom_bodyid[g] not in bodies:
            continue
        if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
            continue  # visual-only geom
        center, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        rot = data.geom_xmat[g].reshape(3, 3)
        local = center + _CORNERS * half
        corners.append(data.geom_xpos[g] + local @ rot.T)
    if not corners:
        raise ValueError(f"object '{name}' has no collision geoms in the MuJoCo model")
    points = np.concatenate(corners)
    xy = points[:, :2] - points[:, :2].mean(axis=0)
    eigval, eigvec = np.linalg.eigh(xy.T @ xy)
    long_dir = eigvec[:, 1]
    yaw = math.atan2(long_dir[1], long_dir[0])
    along = xy @ long_dir
    across = xy @ eigvec[:, 0]
    return ObjectBox(
        origin=np.array(data.xpos[root]),
        lo=points.min(axis=0),
        hi=points.max(axis=0),
        long_axis_yaw=yaw,
        long_width=float(np.ptp(along)),
        short_width=float(np.ptp(across)),
    )


def site_position(env, name: str) -> np.ndarray | None:
    """World position [3] of MuJoCo site `name`, or None when the model has no such site."""
    sim = env.sim
    try:
        sim.model.site_name2id(name)
    except (ValueError, KeyError):
        return None
    return np.array(sim.data.get_site_xpos(name))


def rectangles_overlap(
    center_a: np.ndarray,
    yaw_a: float,
    half_a: np.ndarray,
    center_b: np.ndarray,
    yaw_b: float,
    half_b: np.ndarray,
) -> bool:
    """Whether two oriented rectangles in the floor plane overlap (separating-axis test).

    `center` [2], `yaw` (rad, direction of the first half-extent), `half` [2] half-extents.
    """
    axes_a = np.array([[math.cos(yaw_a), math.sin(yaw_a)], [-math.sin(yaw_a), math.cos(yaw_a)]])
    axes_b = np.array([[math.cos(yaw_b), math.sin(yaw_b)], [-math.sin(yaw_b), math.cos(yaw_b)]])
    offset = np.asarray(center_b, float) - np.asarray(center_a, float)
    for axis in np.concatenate([axes_a, axes_b]):
        radius_a = np.sum(np.abs(axes_a @ axis) * half_a)
        radius_b = np.sum(np.abs(axes_b @ axis) * half_b)
        if abs(offset @ axis) > radius_a + radius_b:
            return False
    return True


def footprint(box: ObjectBox) -> tuple[np.ndarray, float, np.ndarray]:
    """`(center [2], yaw, half extents [2])` of an object's floor footprint rectangle."""
    center = ((box.lo + box.hi) / 2)[:2]
    return center, box.long_axis_yaw, np.array([box.long_width / 2, box.short_width / 2])
