"""LIBERO evaluation: ``LiberoRunner(settings, output_dir).run(policy) -> summary``.

Protocol (OpenVLA-OFT's ``run_libero_eval``): for each task of the suite, ``trials`` episodes
starting from the suite's fixed initial states (trial ``k`` uses state ``k mod 50``), 10 no-op
wait steps (done by ``LiberoEnv.reset``), at most ``MAX_STEPS[suite]`` policy steps, success =
LIBERO's ``done``, 8-action chunks executed open loop (the policy's action queue).

Files in ``output_dir`` (the Hydra run dir): ``episodes.jsonl`` (one line per finished
episode; a rerun in the same dir skips them), ``summary.json`` (atomic), ``videos/`` (opt-in).
With ``eval.num_shards=N`` each shard ``i`` writes ``episodes.shard{i}of{N}.jsonl`` and
``summary.shard{i}of{N}.json``; ``python -m rsdvla.evaluation.reports.merge`` combines them.
``env.num_envs=N`` runs a shard's episodes on N simulator workers with one batched policy call
a step (``vector_rollout``, ``workers``); only this process writes the episode file.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from itertools import groupby
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rsdvla.backbones.preprocessing import CAMERAS
from rsdvla.envs.libero import MAX_STEPS, SUITES
from rsdvla.evaluation.libero.episodes import (
    EpisodeFile,
    EpisodeSpec,
    describe_differences,
    episode_file_name,
    is_error,
    plan_episodes,
    read_episode_file,
    read_run_file,
    record_key,
    run_file_name,
    shard_episodes,
    summary_file_name,
)
from rsdvla.evaluation.libero.scheduler import StageTimes, run_episodes
from rsdvla.evaluation.libero.videos import video_path, write_video
from rsdvla.evaluation.libero.workers import make_simulators
from rsdvla.evaluation.reports.aggregate import render_summary, summarize, write_json_atomic
from rsdvla.evaluation.reports.diagnostic_plots import plot_diagnostics
from rsdvla.evaluation.reports.plots import plot_summary

log = logging.getLogger(__name__)

__all__ = [
    "LiberoEvalSettings",
    "LiberoEnvFactory",
    "LiberoRunner",
    "run_libero",
    "check_gl_backend",
    "build_policy",
]


@dataclass(frozen=True)
class LiberoEvalSettings:
    """What to evaluate and how (``conf/env/libero.yaml`` + ``trials``, ``seed``, ``eval.*``).

    ``task_ids=None``: every task of the suite. ``max_steps=None``: the suite's OpenVLA-OFT limit.
    ``cameras=None``: decided by :meth:`for_policy` (on iff the backbone reads images or videos are on).
    """

    suite: str = "libero_object"
    task_ids: tuple[int, ...] | None = None
    trials: int = 50
    first_trial: int = 0
    max_steps: int | None = None
    cameras: bool | None = None
    camera_size: int = 256
    videos: bool = False
    seed: int = 7
    diagnostics: bool = False  # per-step simulator signals in the records (rsdvla.envs.diagnostics)
    num_shards: int = 1
    shard_id: int = 0
    num_envs: int = 1
    worker_timeout_s: float = 600.0
    allow_training_states: bool = False
    allow_repeats: bool = False

    @classmethod
    def from_config(cls, cfg: DictConfig) -> LiberoEvalSettings:
        """Read ``cfg.env``, ``cfg.trials``, ``cfg.seed`` and ``cfg.eval``."""
        env = cfg.env
        task_ids = env.get("task_ids")
        if task_ids is not None:
            values = [task_ids] if isinstance(task_ids, (int, str)) else list(task_ids)
            task_ids = tuple(_integer("env.task_ids", t, "e.g. env.task_ids=[0,3]") for t in values)
        cameras = env.get("cameras")
        return cls(
            suite=str(env.suite),
            task_ids=task_ids,
            trials=_integer("trials", cfg.trials, "e.g. trials=50"),
            first_trial=_integer(
                "env.first_trial", env.get("first_trial", 0), "e.g. env.first_trial=0"
            ),
            allow_training_states=bool(env.get("allow_training_states", False)),
            allow_repeats=bool(env.get("allow_repeats", False)),
            max_steps=None if env.get("max_steps") is None else int(env.max_steps),
            cameras=None if cameras is None else bool(cameras),
            camera_size=int(env.get("camera_size", 256)),
            videos=bool(env.get("videos", False)),
            seed=int(cfg.seed),
            diagnostics=bool(env.get("diagnostics", False)),
            num_shards=int(cfg.eval.num_shards),
            shard_id=int(cfg.eval.shard_id),
            num_envs=int(env.get("num_envs", 1)),
            worker_timeout_s=float(env.get("worker_timeout_s", 600.0)),
        )

    def __post_init__(self):
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool) or int(self.max_steps) < 1
        ):
            raise ValueError(
                f"env.max_steps={self.max_steps}: must be a positive number of policy steps, or null for "
                f"the suite's limit ({self.suite}: {MAX_STEPS.get(self.suite, '?')}); e.g. env.max_steps=100"
            )
        if isinstance(self.num_envs, bool) or int(self.num_envs) < 1:
            raise ValueError(
                f"env.num_envs={self.num_envs}: must be a positive number of simulator workers; "
                "e.g. env.num_envs=4 (1: one env in the runner's process)"
            )
        if not self.worker_timeout_s > 0:
            raise ValueError(
                f"env.worker_timeout_s={self.worker_timeout_s}: must be a positive number of seconds "
                "a simulator worker may take to answer; e.g. env.worker_timeout_s=600"
            )
        if self.trials < 1:
            raise ValueError(
                f"trials={self.trials}: must be at least 1 episode per task; e.g. trials=50"
            )
        end = self.first_trial + self.trials
        if end > FIXED_INITIAL_STATES and not self.allow_repeats:
            raise ValueError(
                f"env.first_trial={self.first_trial}, trials={self.trials} runs trials up to {end - 1}, past the "
                f"suite's {FIXED_INITIAL_STATES} fixed initial states, so trial k and k+{FIXED_INITIAL_STATES} would "
                f"replay one state as two episodes; keep env.first_trial + trials <= {FIXED_INITIAL_STATES}, or "
                "set env.allow_repeats=true (repeats are recorded, intervals count distinct initial states)"
            )

    def initial_states(self) -> list[int]:
        """The fixed initial state indices this plan starts episodes from (sorted, distinct)."""
        return sorted(
            {
                t % FIXED_INITIAL_STATES
                for t in range(self.first_trial, self.first_trial + self.trials)
            }
        )

    def for_policy(self, required_obs: Sequence[str]) -> LiberoEvalSettings:
        """Settings with ``cameras`` decided: ``None`` -> on iff the policy reads images or videos
        are on; raises one line when cameras are off but needed."""
        needs_images = any(key in CAMERAS for key in required_obs)
        cameras = (needs_images or self.videos) if self.cameras is None else self.cameras
        if needs_images and not cameras:
            raise ValueError(
                f"env.cameras=false but the backbone reads {list(required_obs)}; set env.cameras=true "
                "(or null) or use backbone=state"
            )
        if self.videos and not cameras:
            raise ValueError("env.videos=true needs camera images; set env.cameras=true (or null)")
        return replace(self, cameras=cameras)


FIXED_INITIAL_STATES = 50
"""Fixed initial states per task in every LIBERO suite (trial k starts from state k mod 50)."""


def _integer(field: str, value, example: str) -> int:
    """``value`` as an int, or one line naming ``field`` (``trials=ten`` is not a count)."""
    if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{field}={value!r}: must be an integer; {example}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}={value!r}: must be an integer; {example}") from None


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0..2, 5``."""
    out, values = [], sorted(values)
    for _, group in groupby(enumerate(values), key=lambda iv: iv[1] - iv[0]):
        run = [v for _, v in group]
        out.append(f"{run[0]}..{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)


def check_training_states(settings: LiberoEvalSettings, recorded_store: dict, where: str) -> None:
    """Refuse a plan that starts episodes from fixed initial states the training demos started
    from (``recorded_store["fixed_initial_states"]``, from the checkpoint's lineage), unless
    ``env.allow_training_states=true``. Unknown (stores from before it was recorded): a warning."""
    used = recorded_store.get("fixed_initial_states")
    if used is None:
        log.warning(
            "%s: its store does not record which fixed initial states its demos started from; "
            "evaluation may overlap training states (re-extract the store to record it)",
            where,
        )
        return
    overlap = sorted(set(settings.initial_states()) & {int(i) for i in used})
    if overlap and not settings.allow_training_states:
        free = sorted(set(range(FIXED_INITIAL_STATES)) - {int(i) for i in used})
        hint = (
            f"start from states no demo used ({_ranges(free)}), e.g. env.first_trial={free[0]}"
            if free
            else "every fixed state was used for training"
        )
        raise ValueError(
            f"env.first_trial={settings.first_trial}, trials={settings.trials}: the plan starts from initial states "
            f"{_ranges(overlap)} that {where}'s training demos started from ({recorded_store.get('path')}); "
            f"{hint}, or set env.allow_training_states=true to evaluate on them anyway"
        )


def check_gl_backend() -> None:
    """Fail in one line when MuJoCo cannot create an offscreen GL context (EGL or OSMesa)."""
    from rsdvla.envs.libero import setup_rendering

    setup_rendering()
    backend = os.environ.get("MUJOCO_GL")
    try:
        import mujoco

        context = mujoco.GLContext(16, 16)
        context.make_current()
        context.free()
    except Exception as err:  # EGL/OSMesa failures raise many different types, some unprintable
        raise RuntimeError(
            f"no GL backend for camera rendering: MUJOCO_GL={backend} failed ({type(err).__name__}); "
            "install EGL (libegl1) or OSMesa (libosmesa6) and set MUJOCO_GL=egl|osmesa, "
            "or evaluate without cameras (env.cameras=false backbone=state)"
        ) from None


class LiberoEnvFactory:
    """Creates ``rsdvla.envs.libero.LiberoEnv`` per task (tests pass a fake with the same methods)."""

    def num_tasks(self, suite: str) -> int:
        from rsdvla.envs.libero import num_tasks

        return num_tasks(suite)

    def prepare(self, settings: LiberoEvalSettings) -> None:
        """Checks before the first env: a GL backend when cameras are on."""
        if settings.cameras:
            check_gl_backend()

    def make(self, suite: str, task_id: int, settings: LiberoEvalSettings):
        from rsdvla.envs.libero import LiberoEnv

        return LiberoEnv(
            suite,
            task_id,
            camera_size=settings.camera_size,
            cameras=settings.cameras,
            diagnostics=settings.diagnostics,
        )  # env.seed(0) per env as OpenVLA-OFT (rsdvla.envs.libero.ENV_SEED); `seed` seeds episodes


class RunDirError(ValueError):
    """A run directory that cannot take this evaluation; the message names the file and the fix."""


class LiberoRunner:
    """Runs a policy over the (sharded) episode plan of one LIBERO suite, resumably.

    ``run(policy, metadata=None, identity=None, restart=False) -> summary`` (also written to
    ``summary_path``). The run file (``run.json``, ``run.shard{i}of{N}.json``) records the
    settings (and ``identity``: decoder, backbone, checkpoint hashes); a rerun with other settings
    is refused unless ``restart`` (``eval.restart=true``) sets the old episodes aside. A file lock
    beside the episode file keeps a second process from writing the same shard.
    """

    def __init__(self, settings: LiberoEvalSettings, output_dir: str | os.PathLike, envs=None):
        if settings.suite not in SUITES:
            raise ValueError(
                f"env.suite={settings.suite!r} is not a LIBERO suite; choose one of: {', '.join(SUITES)}"
            )
        self.settings = settings
        self.output_dir = Path(output_dir)
        self.envs = envs or LiberoEnvFactory()
        self.task_ids = self._resolve_task_ids(settings.task_ids)
        self.max_steps = settings.max_steps or MAX_STEPS[settings.suite]
        self.episode_path = self.output_dir / episode_file_name(
            settings.num_shards, settings.shard_id
        )
        self.summary_path = self.output_dir / summary_file_name(
            settings.num_shards, settings.shard_id
        )
        self.run_path = self.output_dir / run_file_name(settings.num_shards, settings.shard_id)
        self.lock_path = self.episode_path.with_name(self.episode_path.name + ".lock")
        self.stage_times = StageTimes()  # where this process's run spent its time (benchmarks)
        self._plan = shard_episodes(
            plan_episodes(settings.suite, self.task_ids, settings.trials, settings.first_trial),
            settings.num_shards,
            settings.shard_id,
        )

    def _resolve_task_ids(self, task_ids: Sequence[int] | None) -> list[int]:
        count = self.envs.num_tasks(self.settings.suite)
        if task_ids is None:
            return list(range(count))
        unknown = [t for t in task_ids if not 0 <= t < count]
        if unknown:
            raise ValueError(
                f"env.task_ids={list(task_ids)}: {unknown} not in suite {self.settings.suite}, "
                f"which has task ids 0..{count - 1}; fix env.task_ids or use null for all"
            )
        return list(dict.fromkeys(int(t) for t in task_ids))

    def plan(self) -> list[EpisodeSpec]:
        """This shard's episodes, task-major."""
        return list(self._plan)

    def restrict_plan(self, keys: set) -> LiberoRunner:
        """Run only the planned episodes whose ``EpisodeSpec.key`` is in ``keys`` (e.g. the
        discordant episodes ``compare --videos`` replays); returns ``self``."""
        self._plan = [spec for spec in self._plan if spec.key in keys]
        return self

    def run(
        self,
        policy,
        metadata: dict[str, Any] | None = None,
        identity: dict[str, Any] | None = None,
        restart: bool = False,
    ) -> dict:
        """Run every planned episode not yet in the episode file, then summarize the shard."""
        from filelock import FileLock, Timeout

        settings = self.settings.for_policy(getattr(policy, "required_obs", ()))
        identity = {"settings": self._identity_settings(settings), **(identity or {})}
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(self.lock_path), timeout=0)
            lock.acquire()
        except Timeout:
            raise RunDirError(
                f"{self.episode_path}: another evaluation is writing this shard (lock {self.lock_path}); "
                "wait for it to finish, or pass a new hydra.run.dir=<dir> (or another eval.shard_id)"
            ) from None
        except OSError as err:
            raise RunDirError(
                f"{self.output_dir}: run directory is not writable ({err.strerror}); pass a writable "
                "hydra.run.dir=<dir>"
            ) from None
        try:
            self.claim(identity, restart)
            return self._run_locked(policy, settings, metadata)
        finally:
            lock.release()

    PLAN_KEYS = ("task_ids", "trials", "first_trial", "num_shards", "shard_id")
    EXECUTION_KEYS = ("videos", "cameras", "diagnostics", "num_envs", "worker_timeout_s")
    """Settings that change what is rendered or logged, or how episodes are parallelised, never
    what an episode does."""

    def _identity_settings(self, settings: LiberoEvalSettings) -> dict:
        """The settings that decide what an episode's record means (suite, max_steps, seed, image
        size). Which episodes run (the plan) may change on a resume: a record stays valid."""
        out = self._settings_dict(settings)
        for key in (*self.PLAN_KEYS, *self.EXECUTION_KEYS):
            out.pop(key)
        return json.loads(json.dumps(out))

    def _plan_dict(self) -> dict:
        """Suite, task ids, trials, first trial, shards: what merge needs to know what is missing."""
        full = self._settings_dict(self.settings)
        return json.loads(json.dumps({k: full[k] for k in ("suite", *self.PLAN_KEYS)}))

    def claim(self, identity: dict, restart: bool = False) -> None:
        """Record ``identity`` in the run file; refuse a directory holding episodes of other settings.

        ``restart``: rename the old episode, summary and run files to ``*.replaced-<time>`` and
        start over (nothing is deleted).
        """
        identity = json.loads(json.dumps(identity))
        recorded = read_run_file(self.run_path)
        has_episodes = bool(read_episode_file(self.episode_path))
        same = recorded is not None and recorded.get("identity") == identity
        if has_episodes and not same:  # (a run file without episodes is simply rewritten)
            if not restart:
                why = (
                    f"its episodes were run with other settings ({describe_differences(recorded['identity'], identity)})"
                    if recorded is not None
                    else f"{self.episode_path.name} has episodes but no {self.run_path.name} records their settings"
                )
                raise RunDirError(
                    f"{self.run_path}: {why}; pass a new hydra.run.dir=<dir>, or eval.restart=true to set "
                    "the old episodes aside and start over"
                )
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for path in (self.episode_path, self.summary_path, self.run_path):
                if path.exists():
                    os.replace(path, path.with_name(f"{path.name}.replaced-{stamp}"))
                    log.warning(
                        "eval.restart=true: %s set aside as %s.replaced-%s", path, path.name, stamp
                    )
        run = {
            "identity": identity,
            "plan": self._plan_dict(),
            "episode_file": self.episode_path.name,
        }
        if run != recorded:  # a resume may extend the plan (more trials or tasks): recorded as such
            write_json_atomic(self.run_path, run)

    def _run_locked(self, policy, settings: LiberoEvalSettings, metadata: dict | None) -> dict:
        from tqdm import tqdm

        episodes = EpisodeFile(self.episode_path)
        planned = {spec.key for spec in self._plan}
        done = episodes.finished_keys() & planned
        pending = [spec for spec in self._plan if spec.key not in done]
        log.info(
            "%s: %d episodes planned, %d already done, %d to run",
            self.episode_path,
            len(planned),
            len(done),
            len(pending),
        )
        if pending:
            self.envs.prepare(settings)
            if hasattr(policy, "warmup"):
                policy.warmup()
        wins = sum(bool(r["success"]) for r in episodes.records() if record_key(r) in planned)
        label = self.settings.suite + (
            f" shard {self.settings.shard_id}/{self.settings.num_shards}"
            if self.settings.num_shards > 1
            else ""
        )
        if not pending:
            return self._summarize(
                episodes, planned, {"settings": self._settings_dict(settings), **(metadata or {})}
            )
        started, ran = time.perf_counter(), 0
        with tqdm(
            total=len(planned), initial=len(done), desc=label, unit="ep", dynamic_ncols=True
        ) as bar:

            def on_record(record: dict, recorder) -> None:
                nonlocal wins, ran
                if recorder is not None and recorder.frames:
                    write_video(
                        video_path(
                            self.output_dir / "videos",
                            record["suite"],
                            record["task_id"],
                            record["trial"],
                            record["success"],
                        ),
                        recorder.frames,
                    )
                episodes.append(record)  # the parent alone writes the episode file
                if not is_error(record):
                    wins += bool(record["success"])
                    ran += 1
                    bar.update(1)
                finished = len(episodes.finished_keys() & planned)
                per_min = 60.0 * ran / max(time.perf_counter() - started, 1e-9)
                errors = len(episodes.error_keys() & planned)
                bar.set_postfix(
                    success=f"{wins / max(finished, 1):.1%}",
                    ep_per_min=f"{per_min:.1f}",
                    **({"errors": errors} if errors else {}),
                )

            sims = make_simulators(self.envs, settings, settings.num_envs)
            try:
                run_episodes(
                    sims,
                    policy,
                    pending,
                    settings.seed,
                    self.max_steps,
                    on_record,
                    videos=settings.videos,
                    times=self.stage_times,
                )
            finally:
                sims.close()
        return self._summarize(
            episodes, planned, {"settings": self._settings_dict(settings), **(metadata or {})}
        )

    def _settings_dict(self, settings: LiberoEvalSettings) -> dict:
        return {**asdict(settings), "max_steps": self.max_steps, "task_ids": self.task_ids}

    def _summarize(self, episodes: EpisodeFile, planned: set, metadata: dict) -> dict:
        records = [r for r in episodes.records(include_errors=True) if record_key(r) in planned]
        summary = summarize(records)
        summary["complete"] = summary["episodes"] == len(planned)
        summary["episode_file"] = str(self.episode_path)
        summary.update(metadata)
        write_json_atomic(self.summary_path, summary)
        success = summary.get("success_rate")
        title = f"LIBERO: {summary.get('episodes', 0)} episodes, success {success if success is None else round(success, 3)}"
        plot_summary(summary, self.summary_path.with_suffix(".png"), title=title)
        plot_diagnostics(
            records,
            self.summary_path.with_name(f"diagnostics{self.summary_path.stem[7:]}.png"),
            title=title,
        )
        render_summary(summary)
        log.info("summary: %s", self.summary_path)
        return summary


def depth_baseline(stack):
    """Greedy main-only at the decoder's truncated depth m (``main_only_m{m}``, timed beside it
    on the same hidden states), or None for a full-depth decoder or without a baseline."""
    from rsdvla.decoding import MainOnlyDecoder
    from rsdvla.decoding.timing import decoder_depth, depth_reference

    depth = decoder_depth(stack.decoder)
    if stack.baseline is None or depth_reference(depth, stack.main.config.num_code_layers) is None:
        return None
    return MainOnlyDecoder(stack.main, stack.tokenizer, depth=depth)


def build_policy(cfg: DictConfig, stack, backbone):
    """The :class:`rsdvla.policy.RSDPolicy` of an evaluation: backbone + ``stack``'s decoder and baseline."""
    from rsdvla.policy import RSDPolicy

    main_width = stack.main.config.hidden_dim
    if int(backbone.hidden_dim) != int(main_width):
        raise ValueError(
            f"backbone {cfg.backbone._target_} gives hidden states of width {backbone.hidden_dim} but {cfg.ckpt.main} "
            f"was trained on width {main_width}; use the backbone the checkpoints were trained with "
            f"(e.g. backbone.hidden_dim={main_width})"
        )
    store = (getattr(stack.main, "lineage", None) or {}).get("store")
    if store:  # load_stack refused checkpoints without lineage
        from rsdvla.checkpoints import check_store_backbone

        check_store_backbone(
            store,
            str(getattr(backbone, "backbone_id", cfg.backbone._target_)),
            int(backbone.hidden_dim),
            f"{cfg.ckpt.main}: main",
            f"the configured backbone ({cfg.backbone._target_})",
            f"set the backbone's settings to those of store {store.get('path')} (its `backbone` attribute)",
        )
    return RSDPolicy(
        backbone,
        stack.decoder,
        stack.normalizer,
        chunk_size=stack.tokenizer.config.chunk_size,
        baseline=stack.baseline,
        depth_baseline=depth_baseline(stack),
        invert_gripper=bool(cfg.env.get("invert_gripper", False)),
        device=stack.device,
    )


def run_identity(cfg: DictConfig, stack, backbone_id: str) -> dict:
    """What a LIBERO run directory's episodes depend on besides the plan (recorded in its run file;
    a resume with another is refused): decoder config, backbone, gripper convention, checkpoint
    hashes, and the decoding precision when it is not float32 (float32 runs keep the identity they
    had before the option existed)."""
    from rsdvla.evaluation.stack import content_hashes

    identity = {
        "decoder": OmegaConf.to_container(cfg.decoder, resolve=True),
        "backbone": backbone_id,
        "invert_gripper": bool(cfg.env.get("invert_gripper", False)),
        "checkpoints": content_hashes(stack),
    }
    if stack.precision != "float32":
        identity["precision"] = stack.precision
    return identity


def prepare_libero(cfg: DictConfig, stack) -> tuple[LiberoRunner, Any, dict, dict]:
    """``(runner, policy, metadata, identity)`` of ``python evaluate.py env=libero``: settings
    (suite, task ids, shard) are checked before the backbone is built; ``env.torch_threads`` set."""
    from rsdvla.cli import build

    runner = LiberoRunner(LiberoEvalSettings.from_config(cfg), cfg.paths.output_dir)
    threads = cfg.env.get("torch_threads")
    if threads:
        torch.set_num_threads(
            int(threads)
        )  # small models next to MuJoCo: more threads only contend
    backbone = build(cfg.backbone)
    policy = build_policy(cfg, stack, backbone)
    backbone_id = getattr(backbone, "backbone_id", cfg.backbone._target_)
    metadata = {
        "decoder": OmegaConf.to_container(cfg.decoder, resolve=True),
        "backbone": backbone_id,
        "ckpt": OmegaConf.to_container(cfg.ckpt, resolve=True),
        "precision": stack.precision,
    }
    return runner, policy, metadata, run_identity(cfg, stack, backbone_id)


def run_libero(cfg: DictConfig, stack) -> dict:
    """``python evaluate.py env=libero``: :func:`prepare_libero`, then the run."""
    runner, policy, metadata, identity = prepare_libero(cfg, stack)
    restart = bool(cfg.eval.get("restart", False))
    return runner.run(policy, metadata, identity=identity, restart=restart)
