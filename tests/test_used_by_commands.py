"""``python evaluate.py decoder=rsd trials=50``, exactly as users are told to type it, starts LIBERO."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers_ckpt import write_tiny_checkpoints

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.sim
@pytest.mark.parametrize("extra", [[], ["env.num_envs=2"]], ids=["one_env", "two_workers"])
def test_evaluate_as_written_starts_the_libero_evaluation_on_the_published_checkpoints(
    tmp_path, extra
):
    """With ``env.num_envs=2`` (README) it runs until its first episode is recorded."""
    pytest.importorskip("libero")
    from rsdvla.backbones import StateBackbone

    # where the quickstart publishes, relative to the directory the command runs in
    write_tiny_checkpoints(
        tmp_path / "outputs/artifacts/sample", 512, backbone=StateBackbone().backbone_id
    )
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "evaluate.py"), "decoder=rsd", "trials=50", *extra],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    run_file, first_episode = None, None
    try:
        deadline = time.time() + (600 if extra else 240)
        while proc.poll() is None and time.time() < deadline:
            found = list((tmp_path / "outputs/evaluate/runs").glob("*/run.json"))
            run_file = found[0] if found else None
            episodes = run_file.with_name("episodes.jsonl") if run_file else None
            if episodes is not None and episodes.exists() and episodes.read_text().endswith("\n"):
                first_episode = json.loads(episodes.read_text().splitlines()[0])
            if run_file is not None and (first_episode is not None or not extra):
                break
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert run_file is not None, err.decode()[-2000:]
    run = json.loads(run_file.read_text())
    assert run["plan"]["suite"] == "libero_object" and run["plan"]["trials"] == 50
    assert run["plan"]["task_ids"] == list(range(10))
    assert run["identity"]["decoder"]["_target_"] == "rsdvla.decoding.SpeculativeDecoder"
    assert run["identity"]["backbone"] == StateBackbone().backbone_id
    if extra:  # two workers ran an episode of task 0 to its end
        assert first_episode is not None, err.decode()[-2000:]
        assert first_episode["task_id"] == 0 and first_episode["steps"] >= 1
