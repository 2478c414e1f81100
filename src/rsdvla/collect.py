"""Collect scripted-expert demonstrations in LIBERO (`python collect.py ...`, config `conf/collect.yaml`).

For each task the expert runs from initial states drawn by LIBERO's own placement sampler
(`initial_states=sampled`, the default: attempt k resets with the sampler seeded by
`sampled_state_seed(seed, task id, k)`, so no demo starts from one of the suite's 50 fixed
evaluation states), or from the fixed states themselves (`initial_states=fixed`: attempt k starts
from state k mod N). Per-attempt noise is seeded by (seed, task id, k); only successful episodes
(LIBERO's `done` flag within the suite's max steps) are kept. Output: one LIBERO demo file per task,
`<out>/<task_name>_demo.hdf5` (layout: `rsdvla.experts.demos`).

Resumable and atomic: each kept demo is first written to its own file in
`<out>/<task_name>_demo.partial/` (temp name, then rename) and progress (attempts so far) to
`progress.json` there; a rerun continues from the next attempt. When a task has its demos they are
merged into the final file (temp name, then rename) and the partial folder is removed; a task
whose final file exists is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class CollectConfigError(ValueError):
    """A collection setting that cannot work; the message names the field and the fix."""


@dataclass
class TaskResult:
    task_id: int
    task_name: str
    demos: int
    attempts: int
    successes: int
    seconds: float
    path: str
    skipped: bool = False

    @property
    def success_rate(self) -> float:
        return self.successes / self.attempts if self.attempts else float("nan")


# ----------------------------------------------------------------------------- config


def resolve_task_ids(suite: str, tasks) -> list[int]:
    """`tasks` (null = all, an int, or a list of ints) -> validated task ids of `suite`."""
    from rsdvla.envs import libero

    try:
        libero.check_suite(suite)
        n = libero.num_tasks(suite)
    except ValueError as err:
        raise CollectConfigError(str(err)) from None
    if tasks is None or tasks == "all":
        return list(range(n))
    ids = [tasks] if isinstance(tasks, int) else list(tasks)
    bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < n]
    if bad:
        raise CollectConfigError(
            f"tasks={ids}: {bad} not in suite '{suite}', which has tasks 0..{n - 1}; "
            f"fix: tasks=[...] with ids in 0..{n - 1}, or tasks=null for all"
        )
    return ids


def _check_settings(cfg) -> None:
    if not isinstance(cfg.episodes_per_task, int) or cfg.episodes_per_task < 1:
        raise CollectConfigError(
            f"episodes_per_task={cfg.episodes_per_task!r}: must be a positive integer (successful demos per task)"
        )
    if not cfg.out:
        raise CollectConfigError("out is empty: set out=<folder for the demo files>")
    if cfg.execution_noise < 0:
        raise CollectConfigError(f"execution_noise={cfg.execution_noise}: must be >= 0")
    if cfg.get("initial_states", "sampled") not in INITIAL_STATES:
        raise CollectConfigError(
            f"initial_states={cfg.initial_states!r}: use initial_states=sampled (fresh states from "
            "LIBERO's placement sampler, held out from evaluation) or initial_states=fixed (the suite's 50 "
            "evaluation states)"
        )


INITIAL_STATES = ("sampled", "fixed")


def sampled_state_seed(seed: int, task_id: int, attempt: int) -> int:
    """Seed of the placement sampler for attempt `attempt` of task `task_id` (a 32-bit int)."""
    return int(np.random.SeedSequence([seed, task_id, attempt, 1]).generate_state(1)[0])


# ----------------------------------------------------------------------------- episodes


def run_episode(
    env,
    expert,
    init_state_index: int | None,
    rng: np.random.Generator,
    execution_noise: float,
    save_states: bool,
    sampler_seed: int | None = None,
):
    """One expert episode. Returns `(success, EpisodeRecorder)`.

    Starts from fixed initial state `init_state_index`, or, when it is None, from the state
    LIBERO's placement sampler draws with `sampler_seed`.

    The recorder holds the expert's commanded actions; with `execution_noise > 0` the env
    executes them plus Gaussian noise on the translation dims (the labels stay clean, as in DART).
    """
    from rsdvla.experts.demos import EpisodeRecorder

    obs = (
        env.reset(init_state_index)
        if init_state_index is not None
        else env.reset_sampled(sampler_seed)
    )
    expert.rng = rng
    expert.reset(env, obs)
    recorder = EpisodeRecorder(images=env.cameras, states=save_states)
    for _ in range(env.task.max_steps):
        action = expert.act(obs)
        executed = action.copy()
        if execution_noise > 0:
            executed[:3] = np.clip(executed[:3] + rng.normal(0.0, execution_noise, 3), -1.0, 1.0)
        recorder.record(obs, action, env.sim.get_state().flatten() if save_states else None)
        obs, done, _ = env.step(executed)
        if done:
            return True, recorder
    return False, recorder


def _load_progress(partial: Path) -> dict:
    progress_file = partial / "progress.json"
    if progress_file.is_file():
        try:
            return json.loads(progress_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CollectConfigError(
                f"{progress_file}: damaged (not JSON); rerun with overwrite=true to recollect the task, "
                f"or delete {partial}"
            ) from None
    return {"attempts": 0, "successes": 0, "seconds": 0.0}


def _save_progress(partial: Path, progress: dict) -> None:
    tmp = partial / "progress.json.tmp"
    tmp.write_text(json.dumps(progress), encoding="utf-8")
    os.replace(tmp, partial / "progress.json")


def _demo_parts(partial: Path) -> list[Path]:
    for stale in partial.glob("*.tmp"):
        stale.unlink()
    return sorted(partial.glob("demo_*.hdf5"))


def _data_attrs(env, task, cfg, progress: dict, expert_config) -> dict:
    from rsdvla.envs.libero import env_kwargs

    inner = env.env
    problem_info = {
        "problem_name": inner.problem_name,
        "domain_name": inner.domain_name,
        "language_instruction": task.instruction,
        "bddl_language_instruction": " ".join(inner.language_instruction)
        if isinstance(inner.language_instruction, list)
        else str(inner.language_instruction),
    }
    env_args = {
        "type": 1,
        "env_name": inner.problem_name,
        "problem_name": inner.problem_name,
        "bddl_file": task.bddl_file,
        "env_kwargs": env_kwargs(task, cfg.camera_size, cfg.cameras),
    }
    collection = {
        "suite": task.suite,
        "task_id": task.task_id,
        "task_name": task.name,
        "attempts": progress["attempts"],
        "successes": progress["successes"],
        "success_rate": progress["successes"] / max(progress["attempts"], 1),
        "seconds": round(progress["seconds"], 1),
        "seed": cfg.seed,
        "cameras": cfg.cameras,
        "execution_noise": cfg.execution_noise,
        "initial_states": cfg.get("initial_states", "sampled"),
        "expert": asdict(expert_config),
        "max_steps": task.max_steps,
    }
    return {
        "problem_info": problem_info,
        "env_args": env_args,
        "bddl_file_name": task.bddl_file,
        "bddl_file_content": Path(task.bddl_file).read_text(encoding="utf-8"),
        "object_state_names": env.object_names,
        "collection": collection,
    }


def collect_task(suite: str, task_id: int, cfg, expert_config, bar=None) -> TaskResult:
    """Collect `cfg.episodes_per_task` successful demos of one task (resuming a partial run)."""
    from rsdvla.envs.libero import LiberoEnv, get_task
    from rsdvla.experts.demos import merge_demo_parts, read_part_attrs, write_demo_part
    from rsdvla.experts.scripted import PickPlaceExpert

    task = get_task(suite, task_id)
    out_dir = Path(cfg.out)
    final = out_dir / f"{task.name}_demo.hdf5"
    if final.exists() and not cfg.overwrite:
        import h5py

        with h5py.File(final, "r") as f:
            info = json.loads(f["data"].attrs.get("collection", "{}"))
            demos = int(f["data"].attrs.get("num_demos", 0))
        if bar is not None:
            bar.update(min(demos, cfg.episodes_per_task))
        return TaskResult(
            task_id,
            task.name,
            demos,
            info.get("attempts", 0),
            info.get("successes", 0),
            info.get("seconds", 0.0),
            str(final),
            skipped=True,
        )

    partial = out_dir / f"{task.name}_demo.partial"
    if cfg.overwrite and partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    progress = _load_progress(partial)
    parts = _demo_parts(partial)
    if parts:  # a kill between writing a demo and the progress file: trust the demos
        last_attempt = int(read_part_attrs(parts[-1])["attempt"])
        progress["attempts"] = max(progress["attempts"], last_attempt + 1)
        progress["successes"] = max(progress["successes"], len(parts))
    if bar is not None:
        bar.update(min(len(parts), cfg.episodes_per_task))
    max_attempts = cfg.max_attempts_per_task or 3 * cfg.episodes_per_task + 10

    env = LiberoEnv(task, camera_size=cfg.camera_size, cameras=cfg.cameras, seed=cfg.seed)
    try:
        expert = PickPlaceExpert(expert_config)
        while len(parts) < cfg.episodes_per_task and progress["attempts"] < max_attempts:
            attempt = progress["attempts"]
            sampled = cfg.get("initial_states", "sampled") == "sampled"
            init_index = None if sampled else attempt % env.num_initial_states
            sampler_seed = sampled_state_seed(cfg.seed, task_id, attempt) if sampled else None
            rng = np.random.default_rng([cfg.seed, task_id, attempt])
            start = time.perf_counter()
            success, recorder = run_episode(
                env, expert, init_index, rng, cfg.execution_noise, cfg.save_states, sampler_seed
            )
            if success:
                part = partial / f"demo_{len(parts):05d}.hdf5"
                # init_state_index -1: not one of the suite's fixed states (see init_state_seed)
                attrs = {
                    "init_state_index": -1 if sampled else init_index,
                    "init_state_seed": -1 if not sampled else sampler_seed,
                    "attempt": attempt,
                }
                write_demo_part(part, recorder.arrays(), attrs, cfg.compression)
                parts.append(part)
                if bar is not None:
                    bar.update(1)
            progress["attempts"] = attempt + 1
            progress["successes"] += int(success)
            progress["seconds"] += time.perf_counter() - start
            _save_progress(partial, progress)
            if bar is not None:
                bar.set_postfix(task=task_id, ok=f"{progress['successes']}/{progress['attempts']}")
        if len(parts) < cfg.episodes_per_task:
            log.warning(
                "task %d (%s): only %d/%d successful demos after %d attempts",
                task_id,
                task.name,
                len(parts),
                cfg.episodes_per_task,
                progress["attempts"],
            )
        merge_demo_parts(parts, final, _data_attrs(env, task, cfg, progress, expert_config))
    finally:
        env.close()
    shutil.rmtree(partial)
    return TaskResult(
        task_id,
        task.name,
        len(parts),
        progress["attempts"],
        progress["successes"],
        progress["seconds"],
        str(final),
    )


def run(cfg) -> dict:
    """Collect demos for `cfg.tasks` of `cfg.suite`; returns metrics (success rates, counts, time)."""
    from hydra.utils import instantiate
    from tqdm import tqdm

    from rsdvla.experts.scripted import ExpertConfig

    _check_settings(cfg)
    task_ids = resolve_task_ids(cfg.suite, cfg.tasks)
    expert_config = instantiate(cfg.expert) if cfg.get("expert") is not None else ExpertConfig()
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    results = []
    start = time.perf_counter()
    with tqdm(
        total=len(task_ids) * cfg.episodes_per_task,
        desc=f"collect {cfg.suite}",
        unit="demo",
        disable=not cfg.progress,
    ) as bar:
        for task_id in task_ids:
            result = collect_task(cfg.suite, task_id, cfg, expert_config, bar)
            results.append(result)
            log.info(
                "task %d %s: %d demos, success %d/%d%s",
                task_id,
                result.task_name,
                result.demos,
                result.successes,
                result.attempts,
                " (already done)" if result.skipped else "",
            )
    attempts = sum(r.attempts for r in results)
    metrics = {
        "success_rate": sum(r.successes for r in results) / attempts if attempts else float("nan"),
        "demos": sum(r.demos for r in results),
        "attempts": attempts,
        "seconds": time.perf_counter() - start,
        "per_task": {
            r.task_id: {
                "name": r.task_name,
                "demos": r.demos,
                "attempts": r.attempts,
                "successes": r.successes,
                "success_rate": r.success_rate,
                "seconds": r.seconds,
                "path": r.path,
            }
            for r in results
        },
    }
    log.info(
        "collected %d demos, expert success %.3f over %d attempts",
        metrics["demos"],
        metrics["success_rate"],
        attempts,
    )
    return metrics
