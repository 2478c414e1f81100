"""One LIBERO episode with a policy -> one episode record (a JSON-ready dict).

The env contract (``rsdvla.envs.libero.LiberoEnv``; tests use a fake with the same methods):
``instruction``, ``num_initial_states``, ``reset(init_state_index) -> obs`` (runs the
``num_steps_wait`` no-op steps), ``step(action[7]) -> (obs, done, info)``; ``done`` is success.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np

from rsdvla.backbones.preprocessing import CAMERAS
from rsdvla.envs.diagnostics import StepLog
from rsdvla.evaluation.divergence import episode_fields
from rsdvla.evaluation.episodes import EpisodeSpec

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


def run_episode(
    env, policy, spec: EpisodeSpec, max_steps: int, frames: list | None = None
) -> dict[str, Any]:
    """Run ``spec`` until success or ``max_steps`` policy steps; returns its episode record.

    ``frames``: when a list, the ``primary`` policy image of every step is appended (for videos).
    """
    start = time.perf_counter()
    init_state_index = spec.trial % env.num_initial_states
    obs = env.reset(init_state_index)
    policy.reset()
    success, steps = False, 0
    step_log = StepLog()  # info["diagnostics"] of env.diagnostics=true
    while steps < max_steps:
        if frames is not None and "primary" in obs:
            frames.append(np.asarray(obs["primary"]))
        action = policy.select_action(policy_observation(obs, env.instruction))
        obs, done, info = env.step(action)
        step_log.add(info, len(policy.chunk_log) - 1)
        steps += 1
        if done:
            success = True
            break
    return {
        "suite": spec.suite,
        "task_id": spec.task_id,
        "instruction": env.instruction,
        "trial": spec.trial,
        "init_state_index": init_state_index,
        "success": success,
        "steps": steps,
        "max_steps": max_steps,
        **_chunk_fields(policy.chunk_log),
        **step_log.fields(),
        "wall_s": round(time.perf_counter() - start, 3),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
