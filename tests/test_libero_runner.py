"""LIBERO runner: episode file, resume, shards, aggregation, Wilson CI (fake env), and one sim run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers_ckpt import write_tiny_checkpoints
from omegaconf import open_dict
from test_policy import NORMALIZER, FakeBackbone, FakeDecoder

from rsdvla.checkpoints import CheckpointError
from rsdvla.decoding.timing import bootstrap_ratio_interval
from rsdvla.evaluation.libero.episodes import (
    EpisodeFile,
    plan_episodes,
    read_episode_file,
    shard_episodes,
)
from rsdvla.evaluation.libero.runner import LiberoEvalSettings, LiberoRunner, check_gl_backend
from rsdvla.evaluation.reports import merge
from rsdvla.evaluation.reports.aggregate import summarize, wilson_interval
from rsdvla.policy import RSDPolicy

NUM_TASKS = 3


def succeeds(task_id: int, trial: int) -> bool:
    """The fake env's ground truth: even (task + trial) succeeds after 5 steps, odd never does."""
    return (task_id + trial) % 2 == 0


class FakeEnv:
    """LiberoEnv's contract without a simulator; logs resets in ``starts``."""

    num_initial_states = 50

    def __init__(self, task_id: int, starts: list):
        self.task_id = task_id
        self.instruction = f"task {task_id}"
        self.starts = starts
        self.closed = False

    def _obs(self):
        image = np.full((8, 8, 3), 10 * self.t, np.uint8)
        return {
            "proprio": np.full(8, self.t, np.float32),
            "object_state": np.zeros(14, np.float32),
            "primary": image,
        }

    def reset(self, init_state_index: int):
        self.t, self.trial = 0, init_state_index
        self.starts.append((self.task_id, init_state_index))
        return self._obs()

    def step(self, action):
        assert np.shape(action) == (7,) and action[6] in (-1.0, 1.0)
        self.t += 1
        return self._obs(), succeeds(self.task_id, self.trial) and self.t >= 5, {}

    def close(self):
        self.closed = True


class FakeEnvs:
    def __init__(self):
        self.starts: list[tuple[int, int]] = []
        self.made: list[int] = []

    def num_tasks(self, suite):
        return NUM_TASKS

    def prepare(self, settings):
        pass

    def make(self, suite, task_id, settings):
        self.made.append(task_id)
        return FakeEnv(task_id, self.starts)


class Crash(Exception):
    pass


class CrashingPolicy(RSDPolicy):
    """Dies (like a kill) when episode number ``crash_at`` starts."""

    def __init__(self, crash_at: int):
        super().__init__(FakeBackbone(), FakeDecoder(), NORMALIZER, baseline=FakeDecoder())
        self.episodes, self.crash_at = 0, crash_at

    def new_slot(self, episode_seed):
        self.episodes += 1
        if self.episodes == self.crash_at:
            raise Crash
        return super().new_slot(episode_seed)


def fake_policy() -> RSDPolicy:
    return RSDPolicy(FakeBackbone(), FakeDecoder(), NORMALIZER, baseline=FakeDecoder())


def settings(**kw) -> LiberoEvalSettings:
    return LiberoEvalSettings(**{"suite": "libero_object", "trials": 2, "max_steps": 12, **kw})


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ----------------------------------------------------------------------------- statistics


def test_wilson_interval_hand_values():
    low, high = wilson_interval(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(50, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def record(task_id, trial, success, **extra):
    return {
        "suite": "libero_object",
        "task_id": task_id,
        "trial": trial,
        "success": success,
        "steps": 10,
        "instruction": "i",
        **extra,
    }


def test_libero_speed_interval_resamples_whole_episodes():
    """Six episodes of 20 chunks, the decoder 2x faster in four and 1x in two: resampling chunks
    always draws a majority of 2x chunks (interval [2, 2]); resampling episodes also draws the
    runs where the 1x episodes are half or more, as a new set of six episodes could be."""
    fast = [True, False, True, True, False, True]
    records = [
        record(
            0,
            t,
            True,
            latency_ms={"decode": [3.0 if f else 6.0] * 20, "baseline_decode": [6.0] * 20},
        )
        for t, f in enumerate(fast)
    ]
    entry = summarize(records)["speed"]["main_only"]
    assert (entry["interval_unit"], entry["blocks"], entry["calls"]) == ("block", 6, 120)
    chunks = [3.0 if f else 6.0 for f in fast for _ in range(20)]
    assert bootstrap_ratio_interval([6.0] * 120, chunks) == [2.0, 2.0]
    assert entry["ratio"] == 2.0 and entry["ci95"][1] == 2.0 and entry["ci95"][0] < 1.5


def test_summarize_latency_speedup_acceptance():
    records = [
        record(
            0,
            0,
            True,
            accepted_layers=[3, 1],
            layer_acceptance=[[1, 1, 1], [1, 0, 0]],
            latency_ms={"decode": [2.0, 4.0], "baseline_decode": [6.0, 6.0]},
        ),
        record(
            0,
            1,
            False,
            accepted_layers=[2],
            layer_acceptance=[[1, 1, 0]],
            latency_ms={"decode": [3.0], "baseline_decode": [9.0]},
        ),
        record(1, 0, True),
        record(0, 1, True),  # a duplicate of (0, 1): counted once, the first record wins
    ]
    summary = summarize(records)
    assert summary["episodes"] == 3 and summary["successes"] == 2
    assert summary["success_rate"] == pytest.approx(2 / 3)
    assert summary["mean_accepted_layers"] == pytest.approx(2.0)
    assert summary["acceptance_per_layer"] == pytest.approx([1.0, 2 / 3, 1 / 3])
    assert summary["latency_ms"]["decode"]["p50"] == 3.0
    assert summary["speedup"] == pytest.approx(6.0 / 3.0)  # paired chunks, wall (no CPU times)
    assert summary["speedup_clock"] == "wall" and summary["speed"]["main_only"]["calls"] == 3
    assert summary["end_to_end"] == {}  # no backbone times: no policy-step speed
    assert (
        summary["latency_p50_ms"],
        summary["main_only_latency_p50_ms"],
        summary["num_chunks"],
    ) == (3.0, 6.0, 3)
    assert summary["speed"]["main_only"]["interval_unit"] == "call"  # 2 episodes timed: too few
    task0 = summary["tasks"][0]
    assert (task0["task_id"], task0["episodes"], task0["successes"]) == (0, 2, 1)
    assert task0["success_ci95"] == pytest.approx(list(wilson_interval(1, 2)))
    assert summary["suites"]["libero_object"]["episodes"] == 3


# ----------------------------------------------------------------------------- plan, shards, file


def test_shards_are_disjoint_balanced_and_cover_the_plan():
    plan = plan_episodes("libero_object", [0, 1, 2], trials=5)
    shards = [shard_episodes(plan, 4, i) for i in range(4)]
    assert sorted(s for shard in shards for s in shard) == sorted(plan)
    assert len({s.key for shard in shards for s in shard}) == 15
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [shard_episodes(plan, 4, i) for i in range(4)]  # deterministic
    with pytest.raises(ValueError, match="eval.shard_id=4"):
        shard_episodes(plan, 4, 4)


def test_episode_file_repairs_a_half_written_line(tmp_path):
    path = tmp_path / "episodes.jsonl"
    log = EpisodeFile(path)
    log.append(record(0, 0, True))
    log.append(record(0, 1, False))
    with open(path, "a") as f:
        f.write('{"suite": "libero_object", "task_id": 0, "tri')  # killed mid-write
    reopened = EpisodeFile(path)
    assert reopened.finished_keys() == {("libero_object", 0, 0), ("libero_object", 0, 1)}
    assert path.read_text().endswith("}\n")
    reopened.append(record(1, 0, True))
    assert [(r["task_id"], r["trial"]) for r in lines(path)] == [(0, 0), (0, 1), (1, 0)]


# ----------------------------------------------------------------------------- runner with a fake env


def test_runner_writes_episodes_and_summary(tmp_path):
    envs = FakeEnvs()
    summary = LiberoRunner(settings(), tmp_path, envs).run(fake_policy())
    records = lines(tmp_path / "episodes.jsonl")
    assert [(r["task_id"], r["trial"]) for r in records] == [
        (t, k) for t in range(3) for k in range(2)
    ]
    for r in records:
        assert r["success"] == succeeds(r["task_id"], r["trial"])
        assert r["steps"] == (5 if r["success"] else 12)
        assert len(r["accepted_layers"]) == math.ceil(r["steps"] / 8)
        assert {"backbone", "decode", "total", "baseline_decode", "verify"} <= set(r["latency_ms"])
        assert r["instruction"] == f"task {r['task_id']}" and r["init_state_index"] == r["trial"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["success_rate"] == summary["success_rate"] == pytest.approx(3 / 6)
    assert on_disk["episodes"] == 6 and on_disk["complete"] is True
    assert on_disk["mean_accepted_layers"] == 2.0
    # speedup = median main-only decode CPU time / median decoder CPU time, over every chunk of
    # every episode (a CPU run: the paired timer's CPU clock), wall time beside
    per_stage = {
        stage: np.median([v for r in records for v in r["latency_ms"][stage]])
        for stage in ("baseline_decode", "decode", "baseline_decode_cpu", "decode_cpu")
    }
    assert on_disk["speedup"] == pytest.approx(
        per_stage["baseline_decode_cpu"] / per_stage["decode_cpu"]
    )
    assert on_disk["speed"]["main_only"]["wall_ratio"] == pytest.approx(
        per_stage["baseline_decode"] / per_stage["decode"]
    )
    assert on_disk["speedup_clock"] in ("thread CPU", "process CPU")
    assert set(on_disk["end_to_end"]) == {"main_only"}
    assert on_disk["num_chunks"] == sum(len(r["latency_ms"]["decode"]) for r in records)
    assert on_disk["settings"]["cameras"] is False  # the fake backbone reads no images
    assert envs.made == [0, 1, 2]


def test_runner_resumes_after_a_kill_without_repeats(tmp_path):
    envs = FakeEnvs()
    with pytest.raises(Crash):
        LiberoRunner(settings(), tmp_path, envs).run(CrashingPolicy(crash_at=4))
    assert len(lines(tmp_path / "episodes.jsonl")) == 3
    summary = LiberoRunner(settings(), tmp_path, envs).run(fake_policy())
    records = lines(tmp_path / "episodes.jsonl")
    assert sorted((r["task_id"], r["trial"]) for r in records) == [
        (t, k) for t in range(3) for k in range(2)
    ]
    assert envs.starts.count((1, 1)) == 2  # the killed episode ran again ...
    assert [s for s in envs.starts if s != (1, 1)] == [
        (0, 0),
        (0, 1),
        (1, 0),
        (2, 0),
        (2, 1),
    ]  # ... nothing else
    assert summary["episodes"] == 6
    made = len(envs.made)
    LiberoRunner(settings(), tmp_path, envs).run(fake_policy())
    assert (
        len(envs.made) == made and len(lines(tmp_path / "episodes.jsonl")) == 6
    )  # all done: no env


def test_sharded_runs_merge_to_the_unsharded_result(tmp_path, capsys):
    full = LiberoRunner(settings(), tmp_path / "full", FakeEnvs()).run(fake_policy())
    for shard in range(2):
        LiberoRunner(
            settings(num_shards=2, shard_id=shard), tmp_path / "sweep" / str(shard), FakeEnvs()
        ).run(fake_policy())
    assert (tmp_path / "sweep" / "1" / "episodes.shard1of2.jsonl").exists()
    assert (tmp_path / "sweep" / "1" / "summary.shard1of2.json").exists()
    merged = merge.main([str(tmp_path / "sweep")])
    assert merged["episodes"] == 6 and len(merged["merged_from"]) == 2
    assert merged["success_rate"] == full["success_rate"]
    assert [t["successes"] for t in merged["tasks"]] == [t["successes"] for t in full["tasks"]]
    assert json.loads((tmp_path / "sweep" / "summary.json").read_text())["episodes"] == 6


def test_videos_one_per_episode(tmp_path):
    import imageio.v2 as imageio

    summary = LiberoRunner(settings(videos=True, task_ids=(0,)), tmp_path, FakeEnvs()).run(
        fake_policy()
    )
    videos = sorted((tmp_path / "videos").iterdir())
    assert [v.stem for v in videos] == [
        "libero_object_task0_trial0_success",
        "libero_object_task0_trial1_failure",
    ]
    assert len(imageio.mimread(videos[1])) == 12  # one frame per policy step
    assert summary["settings"]["cameras"] is True


def test_unknown_suite_and_task_ids_fail_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="libero_spatial, libero_object") as err:
        LiberoRunner(settings(suite="libero_objects"), tmp_path, FakeEnvs())
    assert "\n" not in str(err.value)
    with pytest.raises(
        ValueError, match=r"\[5\] not in suite libero_object, which has task ids 0\.\.2"
    ):
        LiberoRunner(settings(task_ids=(0, 5)), tmp_path, FakeEnvs())


def test_cameras_follow_the_backbone():
    assert settings().for_policy(("proprio",)).cameras is False
    assert settings().for_policy(("primary", "wrist")).cameras is True
    with pytest.raises(ValueError, match="env.cameras=false"):
        settings(cameras=False).for_policy(("primary",))
    with pytest.raises(ValueError, match="env.videos=true"):
        settings(cameras=False, videos=True).for_policy(())


def test_missing_gl_backend_is_one_line(monkeypatch):
    mujoco = pytest.importorskip("mujoco")

    def no_gl(*args):
        raise AttributeError("'NoneType' object has no attribute 'eglGetDisplay'")

    monkeypatch.setattr(mujoco, "GLContext", no_gl)
    with pytest.raises(RuntimeError, match="no GL backend.*MUJOCO_GL=") as err:
        check_gl_backend()
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- checkpoints


def eval_config(tmp_path: Path, ckpts: dict, overrides: list[str]):
    from conftest import compose_config

    cfg = compose_config(
        "evaluate",
        ["env=libero", "backbone=state", "decoder=rsd", "device=cpu", *overrides],
        tmp_path / "run",
    )
    with open_dict(cfg):
        cfg.ckpt = {kind: str(path) for kind, path in ckpts.items()}
    return cfg


def test_checkpoint_without_statistics_fails_in_one_line(tmp_path):
    from rsdvla.evaluation.stack import load_stack

    cfg = eval_config(tmp_path, write_tiny_checkpoints(tmp_path / "ck", 512, with_stats=False), [])
    with pytest.raises(CheckpointError, match="action_stats") as err:
        load_stack(cfg)
    assert "\n" not in str(err.value)


def test_tokenizer_mismatch_fails_in_one_line(tmp_path):
    from rsdvla.evaluation.stack import load_stack

    cfg = eval_config(tmp_path, write_tiny_checkpoints(tmp_path / "ck", 512, main_levels=7), [])
    with pytest.raises(ValueError, match="levels") as err:
        load_stack(cfg)
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- simulator


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # run_libero sets env.torch_threads


@pytest.mark.sim
def test_libero_object_episode_in_the_simulator_resumes(tmp_path, restore_torch_threads):
    """One libero_object task, capped at 20 steps, cameras off, a tiny untrained stack, state backbone."""
    pytest.importorskip("libero")
    from rsdvla.backbones import StateBackbone
    from rsdvla.evaluate import run

    ckpts = write_tiny_checkpoints(tmp_path / "ck", 512, backbone=StateBackbone().backbone_id)
    overrides = ["env.suite=libero_object", "env.task_ids=[0]", "env.max_steps=20", "trials=1"]
    summary = run(eval_config(tmp_path, ckpts, overrides))
    episode_file = tmp_path / "run" / "episodes.jsonl"
    (first,) = lines(episode_file)
    assert (first["suite"], first["task_id"], first["trial"], first["init_state_index"]) == (
        "libero_object",
        0,
        0,
        0,
    )
    assert first["steps"] == 20 or (first["success"] and 1 <= first["steps"] < 20)
    assert "alphabet soup" in first["instruction"]
    assert len(first["accepted_layers"]) == math.ceil(first["steps"] / 8)
    assert all(0 <= a <= 2 for a in first["accepted_layers"])
    stages = {
        "backbone",
        "draft",
        "verify",
        "main_steps",
        "detokenize",
        "decode",
        "total",
        "baseline_decode",
    }
    assert stages <= set(first["latency_ms"])
    assert stages <= set(summary["latency_ms"])
    for key in (
        "success_rate",
        "success_ci95",
        "speedup",
        "mean_accepted_layers",
        "acceptance_per_layer",
        "tasks",
        "suites",
    ):
        assert key in summary, key
    assert summary["episodes"] == 1 and summary["settings"]["cameras"] is False
    assert summary["speedup"] == pytest.approx(
        np.median(first["latency_ms"]["baseline_decode_cpu"])
        / np.median(first["latency_ms"]["decode_cpu"])
    )
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["episodes"] == 1

    # a kill mid-write, then a rerun with one more trial: trial 0 kept as is, trial 1 runs once
    first_line = episode_file.read_text()
    with open(episode_file, "a") as f:
        f.write('{"suite": "libero_object", "task_')
    summary = run(eval_config(tmp_path, ckpts, [*overrides[:-1], "trials=2"]))
    text = episode_file.read_text()
    assert text.startswith(first_line)
    assert [(r["task_id"], r["trial"]) for r in read_episode_file(episode_file)] == [(0, 0), (0, 1)]
    assert summary["episodes"] == 2


def test_first_trial_shifts_the_initial_states():
    from rsdvla.evaluation.libero.episodes import plan_episodes

    specs = plan_episodes("libero_object", [2], trials=3, first_trial=25)
    assert [s.trial for s in specs] == [25, 26, 27]
    with pytest.raises(ValueError, match="first_trial"):
        plan_episodes("libero_object", [2], trials=3, first_trial=-1)


def test_a_truncated_decoder_is_timed_beside_main_only_at_its_depth(tiny_stack_models):
    """The policy times main-only at the decoder's depth on the same hidden states; the summary
    reads the decoder against both references, and the policy step (backbone + decode) too."""
    from test_policy import batch_observation, obs

    from rsdvla.decoding import AgreementAcceptance, MainOnlyDecoder, SpeculativeDecoder
    from rsdvla.evaluation.libero.rollout import _chunk_fields
    from rsdvla.evaluation.libero.runner import depth_baseline

    main, draft, tokenizer = tiny_stack_models

    class Backbone(FakeBackbone):
        hidden_dim = main.config.hidden_dim

        def encode(self, batch):
            return torch.randn(1, self.hidden_dim)

    rsd_m3 = SpeculativeDecoder(main, draft, tokenizer, AgreementAcceptance(0.0), depth=3)
    stack = type(
        "Stack", (), {"decoder": rsd_m3, "baseline": object(), "main": main, "tokenizer": tokenizer}
    )
    assert depth_baseline(stack).depth == 3
    policy = RSDPolicy(
        Backbone(),
        rsd_m3,
        NORMALIZER,
        baseline=MainOnlyDecoder(main, tokenizer),
        depth_baseline=depth_baseline(stack),
    )
    for _ in range(4):
        policy.predict_action_chunk(batch_observation(obs()))
    summary = summarize([record(0, 0, True, **_chunk_fields(policy.chunk_log))])
    assert set(summary["speed"]) == set(summary["end_to_end"]) == {"main_only", "main_only_m3"}
    assert summary["speed"]["main_only_m3"]["calls"] == 4
    assert summary["speedup"] == summary["speed"]["main_only"]["ratio"]
