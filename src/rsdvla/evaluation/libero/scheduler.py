"""The evaluation scheduler: planned episodes over the simulators, one batched policy call a step.

``run_episodes(sims, policy, pending, seed, max_steps, on_record, videos=False)``: a queue of
planned episodes is handed to whichever simulator worker is free (across tasks); every step,
the observations of all running episodes go to ``policy.select_actions`` with their
:class:`rsdvla.policy.EpisodeSlot` s (one backbone + decoder call for those whose action queue
is empty), then every worker steps. Each episode's record is built by its own
:class:`EpisodeRecorder` and handed to ``on_record`` as soon as it ends.

Lockstep rounds: one policy call for the running episodes, then in one exchange every running
episode steps once while the free workers reset for their next episode (a reset, 10 wait steps
and an env rebuild on a task switch, holds the others for that round only).

An episode depends only on its plan entry: its initial state (``trial``), its seed
(``rollout.episode_seed``: global generators seeded in its worker before the reset, decoder row
states started from it) and its own slot. A failed worker (:class:`workers.Failure`) loses its
episode: logged in one line, re-queued once, then recorded as an error (``rollout.error_record``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rsdvla.evaluation.libero.episodes import EpisodeSpec
from rsdvla.evaluation.libero.rollout import (
    EpisodeRecorder,
    episode_seed,
    error_record,
    policy_observation,
    seed_globals,
)
from rsdvla.evaluation.libero.workers import Failure

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2
"""Tries of an episode whose worker failed: re-queued once, then recorded as an error."""


@dataclass
class StageTimes:
    """Seconds spent per stage over a run, and the counts behind them (per episode-step):

    ``policy``: wall time of the batched ``select_actions`` calls; ``sim_step``: each worker's own
    ``env.step`` (physics, and render with cameras); ``round_wall``: wall time of each exchange
    (the slowest worker); ``queue_wait``: per worker-step, the time its answer waited for the
    slowest worker of its round (``round_wall - own step``); ``reset``: each worker's own reset
    (with an env rebuild on a task switch). Per-chunk backbone and decode times are in the
    episode records (``latency_ms``).
    """

    seconds: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)

    def add(self, stage: str, seconds: float, count: int = 1) -> None:
        self.seconds[stage] += seconds
        self.counts[stage] += count


@dataclass
class _Running:
    spec: EpisodeSpec
    seed: int
    recorder: EpisodeRecorder
    slot: Any
    obs: dict


def run_episodes(
    sims,
    policy,
    pending: Sequence[EpisodeSpec],
    seed: int,
    max_steps: int,
    on_record: Callable[[dict, EpisodeRecorder | None], None],
    videos: bool = False,
    times: StageTimes | None = None,
) -> None:
    """Run every episode of ``pending`` on ``sims`` (``workers.InProcessEnvs`` / ``WorkerPool``);
    ``on_record(record, recorder)`` gets each finished episode's record (``recorder`` None for an
    error record), in the order episodes end."""
    queue = deque(pending)
    attempts: Counter = Counter()
    running: dict[int, _Running] = {}
    times = times if times is not None else StageTimes()

    def lost(spec: EpisodeSpec, value: int, failure: Failure) -> None:
        attempts[spec.key] += 1
        again = attempts[spec.key] < MAX_ATTEMPTS
        log.warning(
            "episode %s task %d trial %d lost (%s); %s",
            spec.suite,
            spec.task_id,
            spec.trial,
            failure.message,
            "re-queued" if again else "recorded as an error",
        )
        if again:
            queue.append(spec)
        else:
            on_record(error_record(spec, value, failure.message), None)

    while queue or running:
        workers = sorted(running)
        actions = {}
        if workers:
            start = time.perf_counter()
            chosen = policy.select_actions(
                [
                    policy_observation(running[w].obs, running[w].recorder.instruction)
                    for w in workers
                ],
                [running[w].slot for w in workers],
            )
            times.add("policy", time.perf_counter() - start, len(workers))
            actions = dict(zip(workers, chosen, strict=True))
        assign = {}
        for worker in range(sims.num_workers):
            if worker not in running and queue:
                spec = queue.popleft()
                assign[worker] = (spec, episode_seed(seed, spec))
        start = time.perf_counter()
        answers = sims.exchange(assign, actions)  # free workers reset while the others step
        wall = time.perf_counter() - start
        times.add("round_wall", wall)
        for worker in workers:
            run, answer = running[worker], answers[worker]
            if isinstance(answer, Failure):
                del running[worker]
                lost(run.spec, run.seed, answer)
                continue
            times.add("sim_step", answer.seconds)
            times.add("queue_wait", max(wall - answer.seconds, 0.0))
            run.obs = answer.obs
            if run.recorder.on_step(
                answer.obs, answer.done, answer.info, len(run.slot.chunk_log) - 1
            ):
                del running[worker]
                on_record(run.recorder.finish(run.slot.chunk_log), run.recorder)
        for worker, (spec, value) in assign.items():
            answer = answers[worker]
            if isinstance(answer, Failure):
                lost(spec, value, answer)
                continue
            times.add("reset", answer.seconds)
            if not getattr(sims, "in_process", False):  # (in process: seeded before the reset)
                seed_globals(value)  # decoders drawing from the global generators (seed=None)
            recorder = EpisodeRecorder(spec, max_steps, value, videos)
            recorder.start(answer.obs, answer.instruction, answer.init_state_index)
            running[worker] = _Running(spec, value, recorder, policy.new_slot(value), answer.obs)
