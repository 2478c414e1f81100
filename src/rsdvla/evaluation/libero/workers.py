"""Simulators for the evaluation scheduler: one env in process, or N simulator worker subprocesses.

Both answer one batched request, ``exchange(resets={worker: (spec, seed)}, actions={worker:
action})``, with ``{worker: outcome}``: ``Reset(obs, instruction, init_state_index)`` /
``Step(obs, done, info)`` (``info`` exactly as ``env.step`` returned it), each with the seconds
its worker spent, or a :class:`Failure` naming what went wrong. A worker holds one env at a time and rebuilds it when
it is handed an episode of another task.

:class:`InProcessEnvs` (``env.num_envs=1``): the env lives in the runner's process, as without
workers; an env error is raised. :class:`WorkerPool` (N > 1): each worker is a subprocess
(``forkserver`` start, so MuJoCo and its EGL context are created inside the worker, never
inherited) with ``MUJOCO_EGL_DEVICE_ID`` set per worker when CUDA is present; requests go to all
workers before any answer is read, so the simulators step in parallel; observations come back
with the policy's keys only (``rollout.POLICY_KEYS``), not the raw frames. A worker that dies
(segfault, OOM kill) answers a :class:`Failure` with its exit signal and last error and is
replaced at its next episode.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from rsdvla.evaluation.libero.episodes import EpisodeSpec
from rsdvla.evaluation.libero.rollout import POLICY_KEYS, seed_globals

log = logging.getLogger(__name__)

__all__ = [
    "Reset",
    "Step",
    "Failure",
    "InProcessEnvs",
    "WorkerPool",
    "make_simulators",
    "available_cores",
    "default_num_envs",
]


@dataclass
class Reset:
    """``seconds``: the worker's wall time for the reset (and the env rebuild on a task switch)."""

    obs: dict
    instruction: str
    init_state_index: int
    seconds: float = 0.0


@dataclass
class Step:
    """``seconds``: the wall time of ``env.step`` in its worker (physics and, with cameras, render)."""

    obs: dict
    done: bool
    info: Any
    seconds: float = 0.0


@dataclass
class Failure:
    """A request a worker could not answer: ``message`` (one line), ``died`` when the process is gone."""

    message: str
    died: bool = False


class _TaskEnv:
    """One env at a time, rebuilt when the task changes; the reset/step of one episode."""

    def __init__(self, factory, settings):
        self.factory, self.settings = factory, settings
        self.env, self.task = None, None

    def reset(self, spec: EpisodeSpec, seed: int) -> Reset:
        start = time.perf_counter()
        if self.task != (spec.suite, spec.task_id):
            self.close()
            self.env = self.factory.make(spec.suite, spec.task_id, self.settings)
            self.task = (spec.suite, spec.task_id)
        seed_globals(seed)  # anything the env draws from the global generators is per episode
        index = spec.trial % self.env.num_initial_states
        obs = self.env.reset(index)
        return Reset(obs, self.env.instruction, index, time.perf_counter() - start)

    def step(self, action) -> Step:
        start = time.perf_counter()
        obs, done, info = self.env.step(action)
        return Step(obs, bool(done), info, time.perf_counter() - start)

    def close(self) -> None:
        if self.env is not None:
            env, self.env, self.task = self.env, None, None
            env.close()


class InProcessEnvs:
    """``env.num_envs=1``: one env in this process (errors raise, as a plain loop would)."""

    num_workers = 1
    in_process = True  # the env's reset seeds this process's global generators

    def __init__(self, factory, settings):
        self._env = _TaskEnv(factory, settings)

    def exchange(self, resets: dict[int, tuple[EpisodeSpec, int]], actions: dict[int, Any]):
        answers: dict[int, Any] = {w: self._env.step(action) for w, action in actions.items()}
        answers.update({w: self._env.reset(spec, seed) for w, (spec, seed) in resets.items()})
        return answers

    def close(self) -> None:
        self._env.close()


def worker_main(conn, factory, settings, egl_device: int | None) -> None:
    """A simulator worker's loop: ``("reset", spec, seed)``, ``("step", action)``, ``("close",)``."""
    if egl_device is not None:
        os.environ["MUJOCO_EGL_DEVICE_ID"] = str(egl_device)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the runner, which closes us
    env = _TaskEnv(factory, settings)
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the runner is gone
                return
            kind = message[0]
            if kind == "close":
                return
            try:
                answer = env.reset(*message[1:]) if kind == "reset" else env.step(message[1])
                answer.obs = {k: answer.obs[k] for k in POLICY_KEYS if k in answer.obs}
            except Exception as err:  # an env that raised may be broken: rebuilt at the next reset
                answer = Failure(f"{type(err).__name__}: {err}".splitlines()[0][:500])
                env.close()
            conn.send(answer)
    finally:
        env.close()


def _egl_device(index: int) -> int | None:
    """The GPU a worker renders on (round robin over visible GPUs), None without CUDA."""
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        count = 0
    return index % count if count else None


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


STARTUP_GRACE_S = 300.0
"""Extra seconds a newly started worker may take for its first answer (imports, first env)."""


class WorkerPool:
    """N simulator worker subprocesses (see the module docstring); ``close()`` ends them."""

    def __init__(self, factory, settings, num_workers: int, start_method: str = "forkserver"):
        if num_workers < 1:
            raise ValueError(f"env.num_envs={num_workers}: must be at least 1; e.g. env.num_envs=4")
        self.factory, self.settings, self.num_workers = factory, settings, int(num_workers)
        # env.worker_timeout_s: a request unanswered this long counts as the worker's death
        self.timeout_s = float(getattr(settings, "worker_timeout_s", 600.0))
        self._answered: set[int] = set()  # workers whose current process has answered once
        self._context = multiprocessing.get_context(start_method)
        self._procs: dict[int, Any] = {}
        self._conns: dict[int, Any] = {}
        self.last_error: dict[int, str] = {}

    def _ensure(self, worker: int) -> None:
        proc = self._procs.get(worker)
        if proc is not None and proc.is_alive():
            return
        parent, child = self._context.Pipe()
        proc = self._context.Process(
            target=worker_main,
            args=(child, self.factory, self.settings, _egl_device(worker)),
            name=f"rsdvla-sim-{worker}",
            daemon=True,
        )
        proc.start()
        self.last_error.pop(worker, None)  # a new process: no error yet, no answer yet
        self._answered.discard(worker)
        child.close()  # the worker's end lives only in the worker: its death is our EOF
        self._procs[worker], self._conns[worker] = proc, parent

    def pid(self, worker: int) -> int | None:
        proc = self._procs.get(worker)
        return None if proc is None else proc.pid

    def _request(self, requests: dict[int, tuple]) -> dict[int, Any]:
        sent: dict[int, Any] = {}
        for worker, message in requests.items():
            try:
                self._ensure(worker)
                self._conns[worker].send(message)
                sent[worker] = None
            except (OSError, EOFError, ValueError) as err:
                sent[worker] = self._died(worker, f"{type(err).__name__}: {err}")
        for worker in requests:
            if sent[worker] is not None:
                continue
            try:
                # a new worker first imports torch and builds its env: the grace is on top
                wait = self.timeout_s + (0 if worker in self._answered else STARTUP_GRACE_S)
                if self._conns[worker].poll(wait):
                    answer = self._conns[worker].recv()
                    self._answered.add(worker)
                else:  # a hung simulator (a deadlocked GL driver, an endless physics loop)
                    self._procs[worker].kill()
                    answer = self._died(worker, f"no answer within {wait:g} s, killed")
            except (EOFError, OSError, ConnectionError) as err:
                answer = self._died(worker, type(err).__name__)
            if isinstance(answer, Failure) and not answer.died:
                self.last_error[worker] = answer.message
            sent[worker] = answer
        return sent

    def _died(self, worker: int, how: str) -> Failure:
        proc = self._procs.pop(worker, None)
        conn = self._conns.pop(worker, None)
        if conn is not None:
            conn.close()
        code = None
        if proc is not None:
            proc.join(timeout=5)
            code = proc.exitcode
        last = self.last_error.pop(worker, "none")
        return Failure(
            f"simulator worker {worker} (pid {getattr(proc, 'pid', '?')}) {_describe_exit(code)} "
            f"({how}); its last error: {last}",
            died=True,
        )

    def exchange(self, resets: dict[int, tuple[EpisodeSpec, int]], actions: dict[int, Any]):
        """Send every reset and step request, then read every answer (the workers run at once)."""
        requests = {w: ("step", action) for w, action in actions.items()}
        requests.update({w: ("reset", spec, seed) for w, (spec, seed) in resets.items()})
        return self._request(requests)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            try:
                conn.send(("close",))
            except (OSError, ValueError):
                pass
        for worker, proc in list(self._procs.items()):
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
            self._conns.pop(worker).close()
        self._procs.clear()


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_num_envs(value, processes: int = 1) -> int:
    """``value`` (a configured ``num_envs``) or, when null, the available cores shared by
    ``processes`` evaluation processes (at least 1)."""
    if value is not None:
        return int(value)
    return max(1, available_cores() // max(1, int(processes)))


def make_simulators(factory, settings, num_envs: int):
    """``InProcessEnvs`` for ``num_envs == 1``, else a :class:`WorkerPool` of ``num_envs`` workers."""
    if num_envs == 1:
        return InProcessEnvs(factory, settings)
    return WorkerPool(factory, settings, num_envs)
