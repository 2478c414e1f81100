"""Entry points answer bad values with one line and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import compose_config
from helpers_ckpt import write_tiny_checkpoints
from omegaconf import open_dict

import rsdvla.evaluate

ROOT = Path(__file__).resolve().parents[1]


def offline_config(tmp_path, *overrides):
    cfg = compose_config("evaluate", ["env=offline", "device=cpu", *overrides], tmp_path / "run")
    with open_dict(cfg):
        cfg.ckpt = {k: str(v) for k, v in write_tiny_checkpoints(tmp_path / "ck", 16).items()}
    return cfg


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "env.max_batches=0",
            r"env\.max_batches=0 \(conf/env/offline\.yaml\): must be an integer >= 1",
        ),
        ("env.batch_size=-1", r"env\.batch_size=-1 .*>= 1"),
        ("data=libero_hidden", r"data\.path is not set \(conf/data/libero_hidden\.yaml\)"),
    ],
)
def test_offline_settings_are_checked_before_any_model_loads(tmp_path, override, message):
    with pytest.raises(ValueError, match=message) as err:
        rsdvla.evaluate.run(offline_config(tmp_path, override))
    assert "\n" not in str(err.value)


def test_collect_py_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "collect.py"),
            "episodes_per_task=0",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: episodes_per_task=0: must be a positive integer (successful demos per task)"
    )


def test_damaged_collection_progress_names_the_file_and_the_fix(tmp_path):
    from rsdvla.collect import CollectConfigError, _load_progress

    (tmp_path / "progress.json").write_text('{"attempts": 3, "succ')  # a write cut short
    with pytest.raises(CollectConfigError, match=r"progress\.json: damaged .*overwrite=true"):
        _load_progress(tmp_path)
    assert _load_progress(tmp_path / "fresh")["attempts"] == 0
