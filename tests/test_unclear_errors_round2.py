"""Errors that were unclear (a raw errno, torch's device list, a cut-off message, the wrong file
or diagnosis) are one line naming the file or field and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import compose_config, offline_eval_config
from helpers_ckpt import write_tiny_checkpoints
from test_libero_runner import FakeEnvs, fake_policy, settings

import rsdvla.train
from rsdvla.checkpoints import CheckpointError
from rsdvla.data.store import HiddenStateStore, HiddenStateStoreWriter, StoreError
from rsdvla.evaluation.libero.runner import LiberoRunner
from rsdvla.evaluation.reports import merge
from rsdvla.evaluation.stack import resolve_device


def _read_only(tmp_path: Path) -> Path:
    """A folder nobody can create files in: a chmod 555 folder, or for root (who ignores modes)
    a path under /sys (sysfs refuses new files even to root)."""
    if os.geteuid() == 0:
        return Path("/sys/rsdvla-read-only")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_unknown_device_and_a_directory_as_store_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^device=tpu: not a torch device; use device=cpu"):
        resolve_device("tpu")
    with pytest.raises(
        StoreError, match=rf"^{tmp_path}: is a directory, not a store file; point data\.path"
    ):
        HiddenStateStore(tmp_path)


def test_adaptive_depth_min_above_max_names_its_own_fields():
    from rsdvla.decoding.adaptive import AdaptiveDepthDecoder

    ckpts = write_tiny_checkpoints(Path(os.environ.get("TMPDIR", "/tmp")) / "adaptive_ck", 16)
    from rsdvla.models import MainModel
    from rsdvla.tokenizer import RFSQTokenizer

    main, tok = (
        MainModel.from_checkpoint(ckpts["main"]),
        RFSQTokenizer.from_checkpoint(ckpts["tokenizer"]),
    )
    with pytest.raises(
        ValueError,
        match=r"decoder\.min_depth=4 .* decoder\.max_depth=2.*conf/decoder/adaptive_depth\.yaml",
    ) as err:
        AdaptiveDepthDecoder(main, tok, epsilon=0.01, min_depth=4, max_depth=2)
    assert "main_only.yaml" not in str(err.value)


def test_read_only_artifacts_dir_is_refused_before_training(tmp_path, synthetic_store, monkeypatch):
    artifacts = _read_only(tmp_path) / "artifacts"
    fitted = []
    monkeypatch.setattr("lightning.Trainer.fit", lambda *a, **k: fitted.append(1))
    cfg = compose_config(
        "train",
        [
            "data=libero_hidden",
            f"data.path={synthetic_store}",
            "data.hidden_dim=32",
            f"paths.artifacts_dir={artifacts}",
            "model=tokenizer",
            "logger=none",
            "trainer.accelerator=cpu",
        ],
        tmp_path / "run",
    )
    with pytest.raises(
        OSError,
        match=r"not writable \(.*\), so export=.*/artifacts/tokenizer\.ckpt cannot be published",
    ):
        rsdvla.train.run(cfg)
    assert not fitted


def test_resume_with_another_model_config_is_one_line(tmp_path, synthetic_store):
    def train(*extra):
        cfg = compose_config(
            "train",
            [
                "data=libero_hidden",
                f"data.path={synthetic_store}",
                "data.hidden_dim=32",
                f"paths.root_dir={tmp_path}",
                "model=tokenizer",
                "logger=none",
                "trainer.accelerator=cpu",
                "trainer.max_epochs=1",
                "trainer.limit_train_batches=2",
                *extra,
            ],
            tmp_path / f"run{len(extra)}",
        )
        return rsdvla.train.run(cfg)

    train("model.module.tokenizer.hidden=32")
    last = tmp_path / "run1" / "checkpoints" / "last.ckpt"
    with pytest.raises(
        CheckpointError,
        match=r"model\.module\.tokenizer\.hidden=32 but this run has 64.*drop ckpt_path",
    ):
        train("model.module.tokenizer.hidden=64", f"ckpt_path={last}")


def test_a_second_extraction_to_the_same_out_is_told_another_is_writing(tmp_path):
    out = tmp_path / "store.h5"
    first = HiddenStateStoreWriter(out, 8, "b", {"q01": [0.0]}, ["t"])
    try:
        with pytest.raises(
            StoreError, match=r"store\.h5\.partial: another extraction is writing it"
        ):
            HiddenStateStoreWriter(out, 8, "b", {"q01": [0.0]}, ["t"])
    finally:
        first.close()
    HiddenStateStoreWriter(out, 8, "b", {"q01": [0.0]}, ["t"]).close()  # released on close


def test_extract_into_a_read_only_folder_is_one_line(tmp_path):
    import rsdvla.extract

    folder = _read_only(tmp_path)
    cfg = compose_config("extract", [f"out={folder / 'store.h5'}", "progress=false"], tmp_path)
    with pytest.raises(
        OSError,
        match=r"not writable \(.*\), so out=.*store\.h5 cannot be written; pass a writable out=",
    ):
        rsdvla.extract.run(cfg)


def test_a_full_disk_while_plotting_the_summary_names_the_file_and_leaves_nothing(
    tmp_path, monkeypatch
):
    from matplotlib.figure import Figure

    from rsdvla.evaluation.reports.plots import plot_summary

    def full(self, path, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full)
    summary = {"decoder": "x", "success_rate": 0.5, "latency_ms": {"decode": {"p50": 1.0}}}
    with pytest.raises(
        ValueError, match=rf"{tmp_path / 'summary.png'}: cannot write \(No space left on device\)"
    ):
        plot_summary(summary, tmp_path / "summary.png")
    assert list(tmp_path.iterdir()) == []


def test_merge_after_a_resume_with_more_tasks_or_other_trials_works(tmp_path):
    LiberoRunner(settings(task_ids=(0,), trials=2), tmp_path, FakeEnvs()).run(
        fake_policy(), identity={"d": 1}
    )
    LiberoRunner(settings(task_ids=(0, 1), trials=2, first_trial=5), tmp_path, FakeEnvs()).run(
        fake_policy(), identity={"d": 1}
    )
    summary = merge.main([str(tmp_path)])
    assert summary["complete"] is True and summary["episodes"] == 4  # the latest plan's episodes
    assert summary["episodes_outside_plan"] == 2  # the earlier plan's, kept on disk, left out


def test_offline_evaluation_on_a_store_of_another_chunk_size_is_one_line(tmp_path, monkeypatch):
    import numpy as np

    import rsdvla.evaluate as evaluate
    from rsdvla.data import ActionNormalizer

    ckpts = write_tiny_checkpoints(tmp_path / "ck", 16)
    store = tmp_path / "c4.h5"
    norm = ActionNormalizer.fit(np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32))
    writer = HiddenStateStoreWriter(store, 16, "synthetic", norm.to_dict(), ["t"], chunk_size=4)
    for e in range(4):
        writer.append_episode(e, np.ones((5, 16), np.float32), np.zeros((5, 4, 7), np.float32), 0)
    writer.finalize()
    monkeypatch.setattr("rsdvla.evaluation.offline.run_offline", lambda cfg, stack: {})
    cfg = offline_eval_config(tmp_path, store, ckpts)
    with pytest.raises(
        CheckpointError,
        match=r"action chunks of 4 steps but .*main\.ckpt: main was trained on chunks of 8",
    ):
        evaluate.run(cfg)
