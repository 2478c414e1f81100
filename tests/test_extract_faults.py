"""Extraction faults never poison a rerun: bad values, a damaged .partial, a full disk, NaN demos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_extract import extract_cfg, make_demo, make_demo_dir, read_store

from rsdvla.data.libero_demos import write_demo_file
from rsdvla.data.store import StoreError, partial_path
from rsdvla.extract import run


def test_chunk_size_zero_is_refused_before_any_file_exists(tmp_path):
    demos, _ = make_demo_dir(tmp_path)
    out = tmp_path / "store.h5"
    with pytest.raises(ValueError, match=r"chunk_size=0; set chunk_size>=1"):
        run(extract_cfg(demos, out, "state", "chunk_size=0"))
    assert not partial_path(out).exists()
    assert run(extract_cfg(demos, out, "state"))["episodes"] == 5  # the corrected command


def test_damaged_partial_names_the_fix_and_overwrite_clears_it(tmp_path):
    demos, _ = make_demo_dir(tmp_path)
    out = tmp_path / "store.h5"
    partial_path(out).write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 300)  # cut off mid-write
    with pytest.raises(
        StoreError, match=r"store\.h5\.partial: unfinished extraction is unreadable"
    ) as err:
        run(extract_cfg(demos, out, "state"))
    assert "overwrite=true" in str(err.value) and "\n" not in str(err.value)
    assert run(extract_cfg(demos, out, "state", "overwrite=true"))["episodes"] == 5
    assert not partial_path(out).exists() and len(read_store(out)["episode"]) == 32


def test_lost_writes_are_detected_on_resume(tmp_path):
    """A full disk can make HDF5 lose data silently; the checksums recorded per episode catch it."""
    demos, _ = make_demo_dir(tmp_path)
    out = tmp_path / "store.h5"
    run(extract_cfg(demos, out, "state", "max_episodes=3"))
    with h5py.File(partial_path(out), "a") as f:
        f["hidden"][5:10] = 0  # episode 1's rows never reached the disk
    with pytest.raises(
        StoreError, match=r"episode\(s\) \[1\] read back differently.*overwrite=true"
    ):
        run(extract_cfg(demos, out, "state"))
    assert not out.exists()  # nothing damaged was published
    assert run(extract_cfg(demos, out, "state", "overwrite=true"))["episodes"] == 5


def test_full_disk_stops_with_the_file_named_and_resumes(tmp_path, monkeypatch):
    demos, _ = make_demo_dir(tmp_path)
    out = tmp_path / "store.h5"
    usage = namedtuple("usage", "total used free")
    calls = {"n": 0}
    real = shutil.disk_usage

    def filling(path):
        calls["n"] += 1  # the disk fills up after the partial file and two episodes
        return usage(1 << 30, 0, (1 << 30) if calls["n"] <= 3 else 1000)

    monkeypatch.setattr(shutil, "disk_usage", filling)
    with pytest.raises(
        StoreError, match=r"store\.h5\.partial: disk full: 0\.0 MiB free in .*then rerun"
    ):
        run(extract_cfg(demos, out, "state"))
    with h5py.File(partial_path(out), "r") as f:
        assert f.attrs["committed_rows"] == 5 + 11  # the first two episodes are kept
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert run(extract_cfg(demos, out, "state"))["episodes"] == 3  # resumes after space is freed
    assert len(read_store(out)["episode"]) == 32


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting a tiny tmpfs needs root"
)
def test_real_full_disk_on_a_tiny_tmpfs(tmp_path):
    demos, _ = make_demo_dir(tmp_path, lengths=((60, 60, 60), (60, 60)))
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1400k", "tmpfs", str(disk)]).returncode:
        pytest.skip("tmpfs mount not permitted here")
    try:
        out = disk / "store.h5"
        with pytest.raises(StoreError, match=r"disk\.*/store\.h5\.partial: disk full"):
            run(extract_cfg(demos, out, "state", "batch_size=64"))
        with h5py.File(partial_path(out), "r") as f:
            kept = len(json.loads(f.attrs["completed_episodes"]))
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        assert run(extract_cfg(demos, out, "state", "batch_size=64"))["episodes"] == 5 - kept
        assert len(read_store(out)["episode"]) == 300
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_nan_action_names_the_demo_file(tmp_path):
    rng = np.random.default_rng(0)
    demos = [make_demo(10, rng, 10) for _ in range(2)]
    demos[1]["actions"][3, 2] = np.nan
    path = tmp_path / "demos" / "put_the_bowl_on_the_plate_demo.hdf5"
    write_demo_file(path, demos)
    with pytest.raises(StoreError, match=rf"{path}: data/demo_1/actions step 3 is NaN or inf"):
        run(extract_cfg(path.parent, tmp_path / "store.h5", "state"))
    assert not partial_path(tmp_path / "store.h5").exists()


def test_unwritable_hydra_run_dir_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from rsdvla.cli import check_run_dir

    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == tmp_path else real(p, mode)
    )
    with pytest.raises(SystemExit) as exit_info:
        check_run_dir(["decoder=rsd", f"hydra.run.dir={tmp_path}/run"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path}: not writable, so hydra.run.dir={tmp_path}/run cannot hold the run; "
        "pass a writable hydra.run.dir=<dir> or fix the permissions"
    )
    check_run_dir(["decoder=rsd", f"hydra.run.dir={tmp_path.parent}/fine"])  # writable: no exit
