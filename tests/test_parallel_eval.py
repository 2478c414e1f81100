"""env.num_envs: N simulator workers, one batched policy call a step, records independent of N.

Fake env of test_libero_runner (subprocess workers import it by module name); few and small
runs, since every worker pool starts processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_decoder_seeding import sampled_policy
from test_libero_runner import FakeEnv, FakeEnvs, fake_policy, lines, settings, succeeds

from rsdvla.decoding.divergence import episode_fields
from rsdvla.evaluation.libero.episodes import read_episode_file, record_key
from rsdvla.evaluation.libero.rollout import policy_observation, seed_episode
from rsdvla.evaluation.libero.runner import LiberoRunner
from rsdvla.evaluation.reports import merge
from rsdvla.policy import RSDPolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TIMING = ("wall_s", "finished_at", "latency_ms")


def comparable(record: dict) -> dict:
    """A record without its timing fields (latency stages are kept by name)."""
    out = {k: v for k, v in record.items() if k not in TIMING}
    out["latency_stages"] = sorted(record.get("latency_ms", {}))
    return out


def by_key(records) -> dict:
    return {record_key(r): comparable(r) for r in records}


class BatchLog(RSDPolicy):
    """The fake policy that also logs the instructions of every batched call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []

    def predict_action_chunk(self, obs_batch, slots=None):
        self.batches.append(list(obs_batch["instruction"]))
        return super().predict_action_chunk(obs_batch, slots)


def batch_log_policy() -> BatchLog:
    base = fake_policy()
    return BatchLog(base.backbone, base.decoder, base.normalizer, baseline=base.baseline)


def reference_records(run_settings, policy) -> list[dict]:
    """The single-env loop as the runner ran it before workers existed (one env per task, the
    episode's seed, ``select_action`` one step at a time)."""
    envs, out = FakeEnvs(), []
    for task_id in range(3):
        env = envs.make("libero_object", task_id, run_settings)
        for trial in range(run_settings.trials):
            from rsdvla.evaluation.libero.episodes import EpisodeSpec

            spec = EpisodeSpec("libero_object", task_id, trial)
            value = seed_episode(run_settings.seed, spec)
            policy.seed_episode(value)
            obs = env.reset(trial % env.num_initial_states)
            success, steps = False, 0
            while steps < run_settings.max_steps:
                obs, done, _ = env.step(
                    policy.select_action(policy_observation(obs, env.instruction))
                )
                steps += 1
                if done:
                    success = True
                    break
            chunks = policy.chunk_log
            out.append(
                {
                    "suite": "libero_object",
                    "task_id": task_id,
                    "instruction": env.instruction,
                    "trial": trial,
                    "init_state_index": trial,
                    "episode_seed": value,
                    "success": success,
                    "steps": steps,
                    "max_steps": run_settings.max_steps,
                    "accepted_layers": [c.accepted_layers[0] for c in chunks],
                    "layer_acceptance": [c.layer_acceptance for c in chunks],
                    "latency_ms": {stage: [] for stage in chunks[0].latency_s},
                    **episode_fields(chunks),  # divergence and hidden_shift (issue 16's fields)
                }
            )
    return out


def test_one_env_gives_the_records_of_the_single_env_loop(tmp_path):
    run_settings = settings()
    LiberoRunner(run_settings, tmp_path, FakeEnvs()).run(fake_policy())
    records = lines(tmp_path / "episodes.jsonl")
    expected = reference_records(run_settings, fake_policy())
    assert [comparable(r) for r in records] == [comparable(r) for r in expected]


def test_three_workers_give_the_records_of_one_env_with_mixed_batches(tmp_path):
    one = LiberoRunner(settings(), tmp_path / "one", FakeEnvs()).run(fake_policy())
    policy = batch_log_policy()
    three = LiberoRunner(settings(num_envs=3), tmp_path / "three", FakeEnvs()).run(policy)
    records_one = lines(tmp_path / "one" / "episodes.jsonl")
    records_three = lines(tmp_path / "three" / "episodes.jsonl")
    assert len(records_three) == 6 and by_key(records_three) == by_key(records_one)
    assert three["success_rate"] == one["success_rate"] and three["errors"] == 0
    assert max(len(batch) for batch in policy.batches) == 3  # one call for 3 episodes
    assert any(len(set(batch)) > 1 for batch in policy.batches)  # mixed tasks in one batch
    # the run file does not tie the directory to num_envs: a resume at N=1 is accepted
    LiberoRunner(settings(num_envs=1, trials=3), tmp_path / "three", FakeEnvs()).run(fake_policy())
    assert len(lines(tmp_path / "three" / "episodes.jsonl")) == 9


def chunks_by_episode(tmp_path, name, num_envs) -> dict:
    policy = sampled_policy()
    LiberoRunner(
        settings(task_ids=(0, 1), trials=2, max_steps=24, num_envs=num_envs),
        tmp_path / name,
        envs=FakeEnvs(),
    ).run(policy)
    records = lines(tmp_path / name / "episodes.jsonl")
    order = {r["episode_seed"]: record_key(r) for r in records}
    return {
        seed: np.concatenate(log)
        for seed, log in zip(policy.seeds, policy.episodes, strict=True)
        if seed in order
    }


def test_sampling_decodes_the_same_actions_at_three_workers(tmp_path):
    alone = chunks_by_episode(tmp_path, "one", 1)
    together = chunks_by_episode(tmp_path, "three", 3)
    assert alone.keys() == together.keys() and len(alone) == 4
    for seed in alone:
        np.testing.assert_array_equal(alone[seed], together[seed])
    first, second = list(alone)[:2]
    assert not np.array_equal(alone[first], alone[second])


class DyingEnv(FakeEnv):
    """Kills its worker process at step 3 of (task 1, trial 0) always and of (task 2, trial 1)
    the first time only (a marker file remembers)."""

    def __init__(self, task_id, starts, marker):
        super().__init__(task_id, starts)
        self.marker = marker

    def step(self, action):
        if self.t == 3 and (self.task_id, self.trial) == (1, 0):
            os.kill(os.getpid(), signal.SIGKILL)
        if self.t == 3 and (self.task_id, self.trial) == (2, 1) and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().step(action)


class DyingEnvs(FakeEnvs):
    def __init__(self, marker):
        super().__init__()
        self.marker = str(marker)

    def make(self, suite, task_id, settings):
        return DyingEnv(task_id, self.starts, self.marker)


class HangingEnv(FakeEnv):
    """Never answers step 3 of (task 0, trial 1): a hung simulator."""

    def step(self, action):
        if self.t == 3 and (self.task_id, self.trial) == (0, 1):
            time.sleep(3600)
        return super().step(action)


class HangingEnvs(FakeEnvs):
    def make(self, suite, task_id, settings):
        return HangingEnv(task_id, self.starts)


def test_a_hung_worker_is_killed_after_the_timeout_and_its_episode_recorded_as_an_error(
    tmp_path, caplog
):
    run_dir = tmp_path / "run"
    start = time.monotonic()
    summary = LiberoRunner(
        settings(num_envs=2, task_ids=(0, 1), worker_timeout_s=3.0), run_dir, HangingEnvs()
    ).run(fake_policy())
    assert time.monotonic() - start < 60  # two timeouts of 3 s, not an hour
    records = read_episode_file(run_dir / "episodes.jsonl")
    errors = [r for r in records if r.get("error")]
    assert [(r["task_id"], r["trial"]) for r in errors] == [(0, 1)]
    assert "no answer within 3 s" in errors[0]["error"]
    assert summary["episodes"] == 3 and summary["errors"] == 1
    assert sum("re-queued" in m for m in caplog.messages) == 1
    with pytest.raises(ValueError, match=r"env\.worker_timeout_s=0"):
        settings(worker_timeout_s=0)


def test_a_killed_worker_requeues_its_episode_once_then_records_an_error(tmp_path, caplog):
    run_dir = tmp_path / "run"
    summary = LiberoRunner(settings(num_envs=2), run_dir, DyingEnvs(tmp_path / "died")).run(
        fake_policy()
    )
    records = read_episode_file(run_dir / "episodes.jsonl")
    errors = [r for r in records if r.get("error")]
    assert [(r["task_id"], r["trial"]) for r in errors] == [(1, 0)]
    assert "SIGKILL" in errors[0]["error"] and "success" not in errors[0]
    finished = by_key(r for r in records if not r.get("error"))
    assert set(finished) == {("libero_object", t, k) for t in range(3) for k in range(2)} - {
        ("libero_object", 1, 0)
    }
    assert finished[("libero_object", 2, 1)]["success"] == succeeds(2, 1)  # re-queued, ran again
    lost = [m for m in caplog.messages if "lost" in m]
    assert len(lost) == 3 and sum("re-queued" in m for m in lost) == 2  # (1,0) twice, (2,1) once
    assert summary["episodes"] == 5 and summary["errors"] == 1 and summary["complete"] is False
    # a rerun retries the error; the episode file then counts it once, as a finished episode
    summary = LiberoRunner(settings(num_envs=2), run_dir, FakeEnvs()).run(fake_policy())
    assert summary["episodes"] == 6 and summary["errors"] == 0 and summary["complete"] is True
    assert merge.main([str(run_dir)])["episodes"] == 6


PARENT = """
import sys, time
sys.path.insert(0, {tests!r})
from test_libero_runner import FakeEnv, FakeEnvs, fake_policy, settings
from rsdvla.evaluation.libero.runner import LiberoRunner

class SlowEnv(FakeEnv):
    def step(self, action):
        time.sleep(0.02)
        return super().step(action)

class SlowEnvs(FakeEnvs):
    def make(self, suite, task_id, s):
        return SlowEnv(task_id, self.starts)

if __name__ == "__main__":
    LiberoRunner(settings(num_envs=2, trials=4), {run_dir!r}, SlowEnvs()).run(fake_policy())
"""


def test_a_killed_parent_resumes_without_losing_or_repeating(tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(tests=str(Path(__file__).parent), run_dir=str(run_dir)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.DEVNULL)
    episode_file = run_dir / "episodes.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if episode_file.exists() and len(episode_file.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = episode_file.read_text()
    assert 3 <= len(read_episode_file(episode_file)) < 12
    summary = LiberoRunner(settings(num_envs=2, trials=4), run_dir, FakeEnvs()).run(fake_policy())
    keys = [record_key(r) for r in read_episode_file(episode_file)]
    assert len(keys) == len(set(keys)) == 12 and summary["episodes"] == 12
    assert episode_file.read_text().startswith(before.rsplit("\n", 1)[0])  # nothing rewritten
    assert json.loads((run_dir / "summary.json").read_text())["complete"] is True


@pytest.mark.sim
def test_two_libero_workers_give_the_records_of_one_env(tmp_path):
    """Two real LIBERO workers (libero_object tasks 0 and 1, 12 steps, state backbone, tiny
    untrained stack): the same records as one env in process, episode for episode."""
    pytest.importorskip("libero")
    from helpers_ckpt import write_tiny_checkpoints
    from test_libero_runner import eval_config

    from rsdvla.backbones import StateBackbone
    from rsdvla.evaluate import run

    ckpts = write_tiny_checkpoints(tmp_path / "ck", 512, backbone=StateBackbone().backbone_id)
    base = ["env.suite=libero_object", "env.task_ids=[0,1]", "env.max_steps=12", "trials=1"]
    records = {}
    for num_envs in (1, 2):
        cfg = eval_config(tmp_path / f"n{num_envs}", ckpts, [*base, f"env.num_envs={num_envs}"])
        summary = run(cfg)
        assert summary["episodes"] == 2 and summary["errors"] == 0
        records[num_envs] = by_key(lines(tmp_path / f"n{num_envs}" / "run" / "episodes.jsonl"))
    assert records[2] == records[1]
    assert {r["steps"] for r in records[2].values()} <= set(range(1, 13))


def test_num_envs_below_one_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"env.num_envs=0: must be a positive number") as err:
        settings(num_envs=0)
    assert "\n" not in str(err.value)
