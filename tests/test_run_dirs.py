"""LIBERO run directories know their settings: resume refusal, restart, lock, merge of shards."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from filelock import FileLock
from test_libero_runner import FakeEnvs, fake_policy, lines, settings

from rsdvla.evaluation.libero.runner import LiberoEvalSettings, LiberoRunner, RunDirError
from rsdvla.evaluation.reports import merge

IDENTITY = {"decoder": {"_target_": "rsd", "threshold": 0.7}, "checkpoints": {"main": "sha256:a"}}


def run(tmp_path, identity=IDENTITY, restart=False, **kw):
    return LiberoRunner(settings(**kw), tmp_path, FakeEnvs()).run(
        fake_policy(), identity=identity, restart=restart
    )


def test_resume_with_other_settings_is_refused_until_restart(tmp_path):
    run(tmp_path)
    recorded = json.loads((tmp_path / "run.json").read_text())["identity"]
    assert recorded["settings"]["max_steps"] == 12 and recorded["decoder"]["threshold"] == 0.7
    run(tmp_path)  # same settings: resumes (nothing to do), not refused
    extended = run(tmp_path, trials=3)  # more trials of the same settings: a resume, not a conflict
    assert extended["episodes"] == 9 and len(lines(tmp_path / "episodes.jsonl")) == 9
    assert json.loads((tmp_path / "run.json").read_text())["plan"]["trials"] == 3
    with pytest.raises(
        RunDirError, match=r"run\.json: .*settings\.max_steps: 12 vs 10.*hydra\.run\.dir"
    ):
        run(tmp_path, max_steps=10)
    other = {**IDENTITY, "decoder": {"_target_": "rsd", "threshold": 0.9}}
    with pytest.raises(RunDirError, match=r"decoder\.threshold: 0\.7 vs 0\.9") as err:
        run(tmp_path, identity=other)
    assert "\n" not in str(err.value)
    assert len(lines(tmp_path / "episodes.jsonl")) == 9  # nothing was mixed in
    summary = run(tmp_path, identity=other, restart=True)  # the explicit flag
    assert summary["episodes"] == 6 and summary["complete"] is True
    aside = sorted(p.name for p in tmp_path.glob("*.replaced-*"))
    assert [name.split(".replaced-")[0] for name in aside] == [
        "episodes.jsonl",
        "run.json",
        "summary.json",
    ]  # the old episodes are set aside, not deleted
    assert (
        json.loads((tmp_path / "run.json").read_text())["identity"]["decoder"]["threshold"] == 0.9
    )


def test_episodes_without_a_run_file_are_not_adopted(tmp_path):
    run(tmp_path)
    (tmp_path / "run.json").unlink()
    with pytest.raises(RunDirError, match=r"has episodes but no run\.json records their settings"):
        run(tmp_path)


def test_a_second_writer_on_the_same_shard_is_refused(tmp_path):
    runner = LiberoRunner(settings(), tmp_path, FakeEnvs())
    with FileLock(str(runner.lock_path)):  # another evaluation holds the shard
        with pytest.raises(RunDirError, match=r"another evaluation is writing this shard"):
            run(tmp_path)
    assert not (tmp_path / "episodes.jsonl").exists()
    assert run(tmp_path)["episodes"] == 6  # the lock file left behind does not block a rerun
    # another shard of the same run dir has its own lock
    with FileLock(str(runner.lock_path)):
        run(tmp_path, num_shards=2, shard_id=1)


def test_unwritable_run_dir_is_one_line(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(FileLock, "acquire", refuse)
    with pytest.raises(RunDirError, match=r"run directory is not writable \(Permission denied\)"):
        run(tmp_path)


def test_bad_step_and_trial_counts_fail_in_one_line():
    for value in (0, -5):
        with pytest.raises(ValueError, match=rf"env\.max_steps={value}: must be a positive"):
            LiberoEvalSettings(suite="libero_object", max_steps=value)
    with pytest.raises(ValueError, match=r"trials=0"):
        LiberoEvalSettings(suite="libero_object", trials=0)


def shard(tmp_path, i, n=2, **kw):
    return run(tmp_path / f"job{i}", num_shards=n, shard_id=i, **kw)


def test_merge_reports_missing_shards_and_refuses_mixed_settings(tmp_path, capsys):
    shard(tmp_path, 0)
    partial = merge.main([str(tmp_path)])
    assert partial["complete"] is False and partial["missing_shards"] == [1]
    assert partial["missing_episodes"] == 3 and partial["planned_episodes"] == 6
    assert "incomplete: 3 of 6 planned episodes missing; shard(s) [1]" in capsys.readouterr().err
    shard(tmp_path, 1)
    assert merge.main([str(tmp_path)])["complete"] is True
    shard(tmp_path / "other", 1, max_steps=10)
    with pytest.raises(ValueError, match=r"different settings \(settings\.max_steps: 12 vs 10\)"):
        merge.main([str(tmp_path / "job0"), str(tmp_path / "other")])
    shard(tmp_path / "more", 1, trials=3)
    with pytest.raises(ValueError, match=r"different settings \(plan\.trials: 2 vs 3\)"):
        merge.main([str(tmp_path / "job0"), str(tmp_path / "more")])
    (tmp_path / "job1" / "run.shard1of2.json").unlink()
    with pytest.raises(ValueError, match=r"no run\.shard1of2\.json beside it"):
        merge.main([str(tmp_path / "job0"), str(tmp_path / "job1")])


def test_merge_command_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "rsdvla.evaluation.reports.merge", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nothing'}: no such episode file or folder; pass run folders or episodes*.jsonl files"
    ]


def test_full_disk_while_appending_an_episode_names_the_file(tmp_path, monkeypatch):
    import os

    from rsdvla.evaluation.libero.episodes import EpisodeFile

    episodes = EpisodeFile(tmp_path / "episodes.jsonl")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    record = {"suite": "libero_object", "task_id": 0, "trial": 0, "success": True, "steps": 5}
    with pytest.raises(
        ValueError, match=r"episodes\.jsonl: cannot append the episode \(No space left"
    ):
        episodes.append(record)
    assert episodes.records() == []  # not counted as written
