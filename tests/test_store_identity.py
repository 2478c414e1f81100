"""A checkpoint's split and store are its identity: resumes, teachers and offline evaluation check them."""

import shutil

import pytest
import torch
from conftest import offline_eval_config, train_on_store, write_synthetic_store
from helpers_ckpt import write_tiny_checkpoints

from rsdvla.checkpoints import CheckpointError, stamp
from rsdvla.data.store import HiddenStateStore

pytestmark = pytest.mark.integration


def test_fingerprint_follows_content_not_location(tmp_path):
    a = write_synthetic_store(tmp_path / "a.h5", seed=0)
    b = write_synthetic_store(tmp_path / "b.h5", seed=1)  # same backbone, shape and size
    copy = tmp_path / "elsewhere" / "a.h5"
    copy.parent.mkdir()
    shutil.copyfile(a, copy)
    fa, fb, fc = (HiddenStateStore(p).fingerprint() for p in (a, b, copy))
    assert fa == fc and fa != fb


def test_resume_with_another_split_or_store_is_refused(tmp_path, synthetic_store):
    train_on_store(tmp_path, synthetic_store, "data.val_fraction=0.25")
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"data\.val_fraction=0\.5 but ckpt_path .*=0\.25"):
        train_on_store(
            tmp_path, synthetic_store, "data.val_fraction=0.5", f"ckpt_path={last}", run="r2"
        )
    with pytest.raises(CheckpointError, match=r"data\.seed=3 but ckpt_path .* data\.seed=0"):
        train_on_store(
            tmp_path,
            synthetic_store,
            "data.val_fraction=0.25",
            "data.seed=3",
            f"ckpt_path={last}",
            run="r3",
        )
    other = write_synthetic_store(tmp_path / "other.h5", seed=5)
    with pytest.raises(CheckpointError, match=r"ckpt_path was trained on store .*fingerprint"):
        train_on_store(tmp_path, other, "data.val_fraction=0.25", f"ckpt_path={last}", run="r4")
    # the same settings resume
    train_on_store(
        tmp_path,
        synthetic_store,
        "data.val_fraction=0.25",
        "trainer.max_epochs=2",
        f"ckpt_path={last}",
        run="r5",
    )


def test_unvalidated_or_empty_runs_are_refused(tmp_path, synthetic_store):
    with pytest.raises(ValueError, match=r"trainer\.limit_val_batches=0 .* unvalidated"):
        train_on_store(tmp_path, synthetic_store, "trainer.limit_val_batches=0")
    with pytest.raises(ValueError, match=r"trainer\.max_epochs=0"):
        train_on_store(tmp_path, synthetic_store, "trainer.max_epochs=0")


def test_offline_evaluation_refuses_another_store_of_the_same_backbone(tmp_path, monkeypatch):
    import rsdvla.evaluate as evaluate

    store = write_synthetic_store(tmp_path / "store.h5", hidden_dim=16)
    other = write_synthetic_store(tmp_path / "other.h5", hidden_dim=16, seed=4)
    ckpts = write_tiny_checkpoints(tmp_path / "ck", 16)
    for kind in ("main", "draft"):
        ckpt = torch.load(ckpts[kind], weights_only=True)
        ckpt["hyper_parameters"]["lineage"]["store"].update(
            path=str(store), fingerprint=HiddenStateStore(store).fingerprint()
        )
        torch.save(stamp(ckpt), ckpts[kind])
    monkeypatch.setattr("rsdvla.evaluation.offline.run_offline", lambda cfg, stack: {"ok": 1})

    def config(path):
        return offline_eval_config(tmp_path, path, ckpts)

    with pytest.raises(
        CheckpointError, match=r"main was trained on store .*store\.h5 .* data\.path=.*other\.h5"
    ):
        evaluate.run(config(other))
    copy = tmp_path / "copy" / "store.h5"
    copy.parent.mkdir()
    shutil.copyfile(store, copy)
    assert evaluate.run(config(copy)) == {"ok": 1}  # same content elsewhere is the same store


def test_teacher_from_another_store_of_the_same_backbone_is_refused(tmp_path, synthetic_store):
    tok = train_on_store(tmp_path, synthetic_store, run="tok")["exported"]
    main_overrides = [
        "model.module.main.d_model=32",
        "model.module.main.n_layers=1",
        "model.module.main.n_heads=2",
        f"tokenizer.ckpt={tok}",
    ]
    other = write_synthetic_store(tmp_path / "other.h5", seed=9)
    main = train_on_store(
        tmp_path,
        other,
        *main_overrides,
        "export=" + str(tmp_path / "m.ckpt"),
        model="main",
        run="main",
    )
    with pytest.raises(CheckpointError, match=r"teacher main .*fingerprint"):
        train_on_store(
            tmp_path,
            synthetic_store,
            "model.module.draft.d_model=32",
            "model.module.draft.n_heads=2",
            f"tokenizer.ckpt={tok}",
            f"model.module.teacher_ckpt={main['exported']}",
            model="draft",
            run="draft",
        )
