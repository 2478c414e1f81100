"""LIBERO demonstration reader (HDF5, as published by LIBERO and re-rendered "no-noops" by OpenVLA).

File layout (one file per task, ``<task_name>_demo.hdf5``)::

    data                         attrs: problem_info (JSON with language_instruction), optional
    data/demo_<i>/actions        [T, 7]   dx dy dz drx dry drz gripper (-1 open, +1 close)
    data/demo_<i>/obs/agentview_rgb    [T, h, w, 3] uint8   (stored as rendered: upside down)
    data/demo_<i>/obs/eye_in_hand_rgb  [T, h, w, 3] uint8
    data/demo_<i>/obs/ee_pos [T, 3], ee_ori [T, 3] (axis-angle; a [T, 4] quaternion is converted),
                      gripper_states [T, 2], joint_states [T, 7], object_state [T, S] (optional)

OpenVLA's regenerated files carry no ``problem_info``; the instruction is then derived from the
file name as LIBERO does (``grab_language_from_filename``).

Episodes are ordered deterministically: files sorted by path, demos numerically
(demo_0, demo_1, demo_2, ..., demo_10), and get a global index in that order. Task ids index
the table of distinct instructions in order of first appearance.

Observation keys are named by what a backbone consumes (``Backbone.required_obs``), with the
camera names of ``rsdvla.backbones.preprocessing.CAMERAS``:
``primary`` -> ``agentview_rgb``, ``wrist`` -> ``eye_in_hand_rgb`` (each frame through
``policy_image``: rotated 180 degrees once, JPEG, Lanczos to ``image_size``, exactly as the env
wrapper prepares a simulator frame), ``proprio`` -> ``ee_pos + ee_ori + gripper_states``
([T, 8], as OpenVLA-OFT's LIBERO state), ``object_state`` -> ``object_state``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from rsdvla.backbones.preprocessing import CAMERAS, OPENVLA_IMAGE_SIZE, policy_images
from rsdvla.data.normalization import ActionNormalizer
from rsdvla.envs.conversions import quat2axisangle

OBS_SOURCES: dict[str, tuple[str, ...]] = {
    **{name: (camera.demo_key,) for name, camera in CAMERAS.items()},
    "proprio": ("ee_pos", "ee_ori", "gripper_states"),
    "object_state": ("object_state",),
}
HDF5_SUFFIXES = (".hdf5", ".h5")
_DEMO_RE = re.compile(r"^demo_(\d+)$")
_FIX_RERENDER = (
    "re-render the demos (LIBERO's create_dataset or OpenVLA's regenerate_libero_dataset.py) "
    "or remove the file from `demos`"
)


class DemoError(ValueError):
    """A demonstration file that cannot be used; the message names file, demo, key and fix."""


@dataclass(frozen=True)
class DemoRef:
    """Where one demonstration lives and what it is (no arrays)."""

    path: Path
    demo: str
    episode: int  # global index across all files
    task_id: int
    instruction: str
    length: int


@dataclass
class Episode:
    """One demonstration loaded into memory.

    ``actions`` [T, 7] float32 raw; ``obs`` maps requested keys to arrays with leading dim T
    (``primary``/``wrist`` [T, S, S, 3] uint8 policy images, ``proprio`` [T, 8] float32,
    ``object_state`` [T, S] float32).
    """

    ref: DemoRef
    actions: np.ndarray
    obs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def episode(self) -> int:
        return self.ref.episode

    @property
    def task_id(self) -> int:
        return self.ref.task_id

    @property
    def instruction(self) -> str:
        return self.ref.instruction

    def __len__(self) -> int:
        return int(self.actions.shape[0])


# ---------------------------------------------------------------------------------- helpers
def instruction_from_filename(path: str | os.PathLike) -> str:
    """LIBERO's ``grab_language_from_filename`` applied to a demo file name.

    ``pick_up_the_ketchup_and_place_it_in_the_basket_demo.hdf5`` -> ``pick up the ketchup and
    place it in the basket``; ``KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5`` -> ``turn on the stove``.
    """
    name = Path(path).name
    for suffix in HDF5_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith("_demo"):
        name = name[: -len("_demo")]
    if name[:1].isupper() and "SCENE" in name:  # LIBERO-100: strip the scene prefix
        skip = 8 if "SCENE10" in name else 7
        name = name[name.find("SCENE") + skip :]
    return " ".join(name.split("_")).strip()


def action_chunks(actions: np.ndarray, chunk: int = 8) -> np.ndarray:
    """``actions [T, A]`` -> ``[T, chunk, A]``: row t holds actions t..t+chunk-1, padded with the last action."""
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[0] == 0:
        raise ValueError(f"action_chunks: expected actions [T>0, A], got shape {actions.shape}")
    steps = actions.shape[0]
    index = np.minimum(np.arange(steps)[:, None] + np.arange(chunk)[None, :], steps - 1)
    return actions[index]


def resolve_demo_files(demos: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """A directory (all ``*.hdf5``/``*.h5`` inside, sorted), a file, or a list of either -> sorted files."""
    sources = [demos] if isinstance(demos, (str, os.PathLike)) else list(demos)
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in HDF5_SUFFIXES and p.is_file())
            if not found:
                raise DemoError(
                    f"{path}: no .hdf5 demo files in this directory; point `demos` at a LIBERO demo folder or file"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DemoError(
                f"{path}: demo path does not exist; point `demos` at a LIBERO demo folder or file "
                "(e.g. generate data/sample/libero_object or download libero_spatial_no_noops)"
            )
    unique = sorted({p.resolve() for p in files})
    return unique


def _demo_keys(group: h5py.Group, path: Path) -> list[str]:
    keys = [k for k in group.keys() if _DEMO_RE.match(k)]
    if not keys:
        raise DemoError(f"{path}: group `data` holds no `demo_<i>` entries; {_FIX_RERENDER}")
    return sorted(keys, key=lambda k: int(_DEMO_RE.match(k).group(1)))


def _instruction(data: h5py.Group, path: Path) -> str:
    raw = data.attrs.get("problem_info")
    if raw is not None:
        try:
            text = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw)).get(
                "language_instruction"
            )
        except (json.JSONDecodeError, AttributeError) as err:
            raise DemoError(
                f"{path}: attribute `data.problem_info` is not valid JSON ({err}); fix or delete the attribute "
                "(the instruction is then taken from the file name)"
            ) from err
        if text:
            return " ".join(str(text).split())
    return instruction_from_filename(path)


class LiberoDemoSet:
    """All demonstrations of one or more LIBERO HDF5 files, indexed and validated up front.

    Args:
        demos: a directory of HDF5 files, one file, or a list of either.
        required_obs: observation keys (``primary``, ``wrist``, ``proprio``, ``object_state``)
            every demo must provide; checked at construction (shapes only, no pixels read).
        image_size: side of the policy images that camera frames are turned into (224).
    """

    def __init__(
        self, demos, required_obs: Sequence[str] = (), image_size: int = OPENVLA_IMAGE_SIZE
    ):
        unknown = [k for k in required_obs if k not in OBS_SOURCES]
        if unknown:
            raise ValueError(
                f"required_obs: unknown key(s) {unknown}; choose from {sorted(OBS_SOURCES)}"
            )
        self.required_obs = tuple(required_obs)
        self.image_size = int(image_size)
        self.files = resolve_demo_files(demos)
        self.instructions: list[str] = []
        self.demos: list[DemoRef] = []
        for path in self.files:
            self._index_file(path)

    # ------------------------------------------------------------------ indexing
    def _index_file(self, path: Path) -> None:
        try:
            with h5py.File(path, "r") as f:
                if "data" not in f:
                    raise DemoError(
                        f"{path}: no `data` group; this is not a LIBERO demo file: {_FIX_RERENDER}"
                    )
                data = f["data"]
                instruction = _instruction(data, path)
                if instruction not in self.instructions:
                    self.instructions.append(instruction)
                task_id = self.instructions.index(instruction)
                for demo in _demo_keys(data, path):
                    length = self._check_demo(data[demo], path, demo)
                    self.demos.append(
                        DemoRef(path, demo, len(self.demos), task_id, instruction, length)
                    )
        except DemoError:
            raise
        except (OSError, KeyError, RuntimeError) as err:
            raise DemoError(
                f"{path}: unreadable or truncated HDF5 file ({_first_line(err)}); {_FIX_RERENDER}"
            ) from err

    def _check_demo(self, group: h5py.Group, path: Path, demo: str) -> int:
        if "actions" not in group:
            raise DemoError(f"{path}: demo `{demo}` lacks `actions`; {_FIX_RERENDER}")
        actions = group["actions"]
        if actions.ndim != 2 or actions.shape[1] != 7 or actions.shape[0] == 0:
            raise DemoError(
                f"{path}: demo `{demo}` key `actions` has shape {actions.shape}, expected [T>0, 7]; {_FIX_RERENDER}"
            )
        length = int(actions.shape[0])
        for obs_key in self.required_obs:
            for key in OBS_SOURCES[obs_key]:
                full = f"obs/{key}"
                if full not in group:
                    raise DemoError(
                        f"{path}: demo `{demo}` lacks `{full}` (needed for `{obs_key}`); {_FIX_RERENDER}, "
                        "or pick a backbone that does not need it"
                    )
                if group[full].shape[0] != length:
                    raise DemoError(
                        f"{path}: demo `{demo}` key `{full}` has {group[full].shape[0]} steps but `actions` has "
                        f"{length}; the demo is inconsistent: {_FIX_RERENDER}"
                    )
        return length

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.demos)

    @property
    def num_samples(self) -> int:
        return sum(ref.length for ref in self.demos)

    def all_actions(self) -> np.ndarray:
        """Raw actions of every step of every demo, ``[N, 7]`` float32."""
        parts = []
        for path, refs in self._by_file(self.demos):
            with self._open(path) as f:
                for ref in refs:
                    parts.append(self._read(f, ref, "actions").astype(np.float32))
        return np.concatenate(parts, axis=0)

    def fit_normalizer(self) -> ActionNormalizer:
        """Action statistics over all steps of all demos (q01/q99 bounds, gripper unmasked)."""
        return ActionNormalizer.fit(self.all_actions())

    def episodes(
        self, obs_keys: Sequence[str] | None = None, skip: Iterable[int] = ()
    ) -> Iterator[Episode]:
        """Yield episodes in global order, loading ``obs_keys`` (default: ``required_obs``); skip episode ids in ``skip``."""
        obs_keys = self.required_obs if obs_keys is None else tuple(obs_keys)
        skip = set(skip)
        todo = [ref for ref in self.demos if ref.episode not in skip]
        for path, refs in self._by_file(todo):
            with self._open(path) as f:
                for ref in refs:
                    yield self._load(f, ref, obs_keys)

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _by_file(refs: Sequence[DemoRef]) -> Iterator[tuple[Path, list[DemoRef]]]:
        current: list[DemoRef] = []
        for ref in refs:
            if current and ref.path != current[0].path:
                yield current[0].path, current
                current = []
            current.append(ref)
        if current:
            yield current[0].path, current

    @staticmethod
    def _open(path: Path) -> h5py.File:
        try:
            return h5py.File(path, "r")
        except OSError as err:
            raise DemoError(
                f"{path}: unreadable or truncated HDF5 file ({_first_line(err)}); {_FIX_RERENDER}"
            ) from err

    @staticmethod
    def _read(f: h5py.File, ref: DemoRef, key: str) -> np.ndarray:
        try:
            return np.asarray(f[f"data/{ref.demo}/{key}"][()])
        except (OSError, KeyError, RuntimeError) as err:
            raise DemoError(
                f"{ref.path}: demo `{ref.demo}` key `{key}` cannot be read ({_first_line(err)}); "
                f"the file is truncated or damaged: {_FIX_RERENDER}"
            ) from err

    def _load(self, f: h5py.File, ref: DemoRef, obs_keys: Sequence[str]) -> Episode:
        actions = self._read(f, ref, "actions").astype(np.float32)
        obs: dict[str, np.ndarray] = {}
        for obs_key in obs_keys:
            if obs_key == "proprio":
                obs[obs_key] = self._proprio(f, ref)
            else:
                (key,) = OBS_SOURCES[obs_key]
                value = self._read(f, ref, f"obs/{key}")
                if obs_key in CAMERAS:
                    obs[obs_key] = self._policy_images(value, ref, key)
                else:
                    obs[obs_key] = value.astype(np.float32)
            if obs[obs_key].shape[0] != len(actions):
                raise DemoError(
                    f"{ref.path}: demo `{ref.demo}` observation `{obs_key}` has {obs[obs_key].shape[0]} steps but "
                    f"`actions` has {len(actions)}; {_FIX_RERENDER}"
                )
        return Episode(ref, actions, obs)

    def _policy_images(self, frames: np.ndarray, ref: DemoRef, key: str) -> np.ndarray:
        """Raw frames ``[T, h, w, 3]`` uint8 as stored -> policy images ``[T, S, S, 3]`` uint8."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise DemoError(
                f"{ref.path}: demo `{ref.demo}` key `obs/{key}` has shape {frames.shape} dtype "
                f"{frames.dtype}, expected [T, h, w, 3] uint8 camera frames; {_FIX_RERENDER}"
            )
        return policy_images(frames, self.image_size)

    def _proprio(self, f: h5py.File, ref: DemoRef) -> np.ndarray:
        """``[T, 8]``: eef position (3), eef axis-angle (3), gripper joint positions (2)."""
        pos = self._read(f, ref, "obs/ee_pos")
        ori = self._read(f, ref, "obs/ee_ori")
        grip = self._read(f, ref, "obs/gripper_states")
        if ori.shape[-1] == 4:
            ori = quat2axisangle(ori)
        parts = {"ee_pos": (pos, 3), "ee_ori": (ori, 3), "gripper_states": (grip, 2)}
        for key, (value, width) in parts.items():
            if value.ndim != 2 or value.shape[1] != width:
                raise DemoError(
                    f"{ref.path}: demo `{ref.demo}` key `obs/{key}` has shape {value.shape}, expected [T, {width}]; {_FIX_RERENDER}"
                )
        return np.concatenate([pos, ori, grip], axis=1).astype(np.float32)


def write_demo_file(
    path: str | os.PathLike,
    demos: Sequence[Mapping[str, np.ndarray]],
    instruction: str | None = None,
) -> Path:
    """Write demos in the LIBERO layout: each demo maps ``actions`` and obs names (``agentview_rgb``,
    ``ee_pos``, ...) to arrays with leading dim T. ``instruction`` goes to ``data.problem_info``
    (None: no attribute, as in OpenVLA's no-noops files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        if instruction is not None:
            data.attrs["problem_info"] = json.dumps({"language_instruction": instruction})
        for i, demo in enumerate(demos):
            group = data.create_group(f"demo_{i}")
            group.create_dataset("actions", data=np.asarray(demo["actions"]))
            obs = group.create_group("obs")
            for key, value in demo.items():
                if key != "actions":
                    obs.create_dataset(key, data=np.asarray(value))
    return path


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
