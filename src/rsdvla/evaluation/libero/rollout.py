"""One LIBERO episode's record (a JSON-ready dict), its seeds, and its policy observation.

The env contract (``rsdvla.envs.libero.LiberoEnv``; tests use a fake with the same methods):
``instruction``, ``num_initial_states``, ``reset(init_state_index) -> obs`` (runs the
``num_steps_wait`` no-op steps), ``step(action[7]) -> (obs, done, info)``; ``done`` is success.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from rsdvla.backbones.preprocessing import CAMERAS
from rsdvla.decoding.divergence import episode_fields
from rsdvla.envs.diagnostics import StepLog
from rsdvla.evaluation.libero.episodes import EpisodeSpec

POLICY_KEYS = (*CAMERAS, "proprio", "object_state")
"""Observation keys a policy reads; the env wrapper, demo reader and backbones share these names."""


def policy_observation(obs: Mapping[str, Any], instruction: str) -> dict[str, Any]:
    """Env observation -> one unbatched backbone sample: ``primary``/``wrist`` policy images
    ``[224, 224, 3]`` uint8 (already through ``policy_image``), ``proprio [8]``,
    ``object_state [S]``, ``instruction``; keeps only the keys the env produced."""
    sample: dict[str, Any] = {key: obs[key] for key in POLICY_KEYS if key in obs}
    sample["instruction"] = instruction
    return sample


def _chunk_fields(chunk_log: list) -> dict[str, Any]:
    """Per-chunk stats of one episode -> record fields (single-env chunks: B = 1)."""
    latency_ms: dict[str, list[float]] = {}
    for chunk in chunk_log:
        for stage, seconds in chunk.latency_s.items():
            latency_ms.setdefault(stage, []).append(round(1000.0 * seconds, 4))
    return {
        "accepted_layers": [
            None if c.accepted_layers is None else int(c.accepted_layers[0]) for c in chunk_log
        ],
        "layer_acceptance": [
            c.layer_acceptance for c in chunk_log if c.layer_acceptance is not None
        ],
        "latency_ms": latency_ms,
        **episode_fields(chunk_log),  # divergence (with a baseline), hidden_shift
    }


def episode_seed(seed: int, spec: EpisodeSpec) -> int:
    """The episode's seed, from the evaluation ``seed`` and its identity ``(task, trial)``."""
    return int(np.random.SeedSequence([seed, spec.task_id, spec.trial]).generate_state(1)[0])


def seed_globals(value: int) -> None:
    """Seed python, numpy and torch's global generators with an episode's seed."""
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def seed_episode(seed: int, spec: EpisodeSpec) -> int:
    """Seed python, numpy and torch from ``(seed, task, trial)``: a resumed run repeats an
    uninterrupted one exactly, whatever episodes ran before in the same process. Returns the
    episode's seed (the policy's per-episode decoder state starts from it)."""
    value = episode_seed(seed, spec)
    seed_globals(value)
    return value


class EpisodeRecorder:
    """Builds one episode's record from what the simulator returns (the one place, for one env in
    process and for N simulator workers alike).

    ``start(obs, instruction, init_state_index)`` after the reset; ``on_step(obs, done, info)``
    after every ``env.step`` (``info`` exactly as the env returned it) returns True when the
    episode is over (success, or ``max_steps`` policy steps); ``finish(chunk_log)`` -> the record.
    ``frames`` (when ``videos``): the ``primary`` policy image before every policy step.
    """

    def __init__(self, spec: EpisodeSpec, max_steps: int, seed: int, videos: bool = False):
        self.spec, self.max_steps, self.episode_seed = spec, int(max_steps), int(seed)
        self.frames: list | None = [] if videos else None
        self.success, self.steps, self.done = False, 0, False
        self.instruction, self.init_state_index = "", 0
        self.step_log = StepLog()  # info["diagnostics"] of env.diagnostics=true
        self._start = time.perf_counter()

    def _frame(self, obs: Mapping[str, Any]) -> None:
        if self.frames is not None and "primary" in obs:
            self.frames.append(np.asarray(obs["primary"]))

    def start(self, obs: Mapping[str, Any], instruction: str, init_state_index: int) -> None:
        self.instruction, self.init_state_index = instruction, int(init_state_index)
        self._frame(obs)

    def on_step(
        self, obs: Mapping[str, Any], done: bool, info: Mapping[str, Any], chunk: int | None = None
    ) -> bool:
        """``chunk``: index of the policy chunk this step executed (for per-step diagnostics)."""
        self.step_log.add(info, chunk)
        self.steps += 1
        if done:
            self.success = self.done = True
        elif self.steps >= self.max_steps:
            self.done = True
        else:
            self._frame(obs)
        return self.done

    def finish(self, chunk_log: list) -> dict[str, Any]:
        spec = self.spec
        return {
            "suite": spec.suite,
            "task_id": spec.task_id,
            "instruction": self.instruction,
            "trial": spec.trial,
            "init_state_index": self.init_state_index,
            "episode_seed": self.episode_seed,
            "success": self.success,
            "steps": self.steps,
            "max_steps": self.max_steps,
            **_chunk_fields(chunk_log),
            **self.step_log.fields(),
            "wall_s": round(time.perf_counter() - self._start, 3),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def error_record(spec: EpisodeSpec, seed: int, error: str) -> dict[str, Any]:
    """The record of an episode that could not be run (``episodes.is_error``): no ``success``."""
    return {
        "suite": spec.suite,
        "task_id": spec.task_id,
        "trial": spec.trial,
        "episode_seed": int(seed),
        "error": error,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
