"""Integration: train.py for every model on tiny configs, checkpoints that stand alone, clear errors."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import compose_config, write_synthetic_store

import rsdvla.train
from rsdvla.checkpoints import CheckpointError, load_checkpoint
from rsdvla.models import DraftModel, MainModel
from rsdvla.tokenizer import RFSQTokenizer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "tokenizer": ["model.module.tokenizer.hidden=32"],
    "main": [
        "model.module.main.d_model=32",
        "model.module.main.n_layers=1",
        "model.module.main.n_heads=2",
    ],
    "draft": ["model.module.draft.d_model=32", "model.module.draft.n_heads=2"],
    "context_draft": [],
}


def _overrides(store: Path, root: Path, model: str, *extra: str) -> list[str]:
    return [
        "data=libero_hidden",
        f"data.path={store}",
        "data.hidden_dim=32",
        "data.batch_size=32",
        f"paths.root_dir={root}",
        f"model={model}",
        "logger=none",
        "trainer.accelerator=cpu",
        *TINY[model],
        *extra,
    ]


def _train(tmp_path: Path, store: Path, model: str, *extra: str) -> dict:
    cfg = compose_config(
        "train", _overrides(store, tmp_path, model, *extra), tmp_path / f"run_{model}"
    )
    return rsdvla.train.run(cfg)


@pytest.fixture
def tokenizer_ckpt(tmp_path, synthetic_store) -> Path:
    metrics = _train(
        tmp_path,
        synthetic_store,
        "tokenizer",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
    )
    return Path(metrics["exported"])


def test_each_model_trains_and_exports_a_standalone_checkpoint(
    tmp_path, synthetic_store, tokenizer_ckpt
):
    assert tokenizer_ckpt == tmp_path / "outputs/artifacts/libero_hidden/tokenizer.ckpt"
    tok = RFSQTokenizer.from_checkpoint(tokenizer_ckpt)
    assert tok.config.hidden == 32 and tok.action_stats["q01"]
    for model, cls in (("main", MainModel), ("draft", DraftModel)):
        metrics = _train(
            tmp_path,
            synthetic_store,
            model,
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
        )
        assert "val/acc_L0" in metrics and "train/loss" in metrics
        loaded = cls.from_checkpoint(metrics["exported"])
        assert loaded.config.hidden_dim == 32 and loaded.action_stats == tok.action_stats
        assert (
            loaded.input_norm.mean.abs().sum() > 0
        )  # standardization fixed from the training split
        ckpt = load_checkpoint(metrics["exported"], kind=model)
        assert ckpt["hyper_parameters"]["config"]["data"]["path"] == str(
            synthetic_store
        )  # resolved config inside


@pytest.mark.parametrize("model", ["tokenizer", "main", "draft"])
def test_fast_dev_run(tmp_path, synthetic_store, tokenizer_ckpt, model):
    metrics = _train(
        tmp_path, synthetic_store, model, "debug=fdr", f"tokenizer.ckpt={tokenizer_ckpt}"
    )
    assert metrics["train/loss"] > 0 and "exported" not in metrics  # fast_dev_run saves nothing


def test_main_without_tokenizer_says_which_command_makes_it(tmp_path, synthetic_store):
    with pytest.raises(CheckpointError, match=r"tokenizer\.ckpt.*python train\.py model=tokenizer"):
        _train(tmp_path, synthetic_store, "main", "debug=fdr")


def test_tokenizer_model_mismatch_is_one_line(tmp_path, synthetic_store, tokenizer_ckpt):
    with pytest.raises(
        CheckpointError, match=r"tokenizer has levels=7 but model\.module\.main\.levels=5"
    ):
        _train(tmp_path, synthetic_store, "main", "debug=fdr", "model.module.main.levels=5")


def test_checkpoint_errors_name_file_and_producer(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.ckpt.*python train\.py model=main"):
        MainModel.from_checkpoint(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.ckpt: not a readable checkpoint"):
        RFSQTokenizer.from_checkpoint(junk)
    torch.save(
        {"state_dict": {}, "hyper_parameters": {"kind": "draft", "draft": {}}}, tmp_path / "d.ckpt"
    )
    with pytest.raises(CheckpointError, match=r"this is a draft checkpoint"):
        MainModel.from_checkpoint(tmp_path / "d.ckpt")


def test_checkpoints_record_their_lineage(tmp_path, synthetic_store, tokenizer_ckpt):
    """Every checkpoint (last.ckpt too) carries its content hash; main records tokenizer and store."""
    from rsdvla.checkpoints import checkpoint_content_hash

    metrics = _train(
        tmp_path, synthetic_store, "main", "trainer.max_epochs=1", "trainer.limit_train_batches=2"
    )
    ckpt = load_checkpoint(metrics["exported"], kind="main")
    lineage = ckpt["hyper_parameters"]["lineage"]
    assert lineage["tokenizer"] == {
        "path": str(tokenizer_ckpt),
        "content_hash": checkpoint_content_hash(tokenizer_ckpt),
    }
    from rsdvla.data.store import HiddenStateStore

    assert lineage["store"].pop("fingerprint") == HiddenStateStore(synthetic_store).fingerprint()
    assert lineage["store"].pop("fixed_initial_states") is None  # a synthetic store: unknown
    assert lineage["store"] == {
        "path": str(synthetic_store),
        "backbone": "synthetic",
        "hidden_dim": 32,
        "chunk_size": 8,
        "samples": 12 * 24,
    }
    last = tmp_path / "run_main" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["content_hash"] == checkpoint_content_hash(last)


def test_teacher_from_another_backbone_store_is_refused(tmp_path, synthetic_store, tokenizer_ckpt):
    """Issue 9: heads trained on other pooling/attention than this store's are caught at train time."""
    import h5py

    main = _train(
        tmp_path, synthetic_store, "main", "trainer.max_epochs=1", "trainer.limit_train_batches=2"
    )
    pooled = write_synthetic_store(tmp_path / "pooled.h5")
    with h5py.File(pooled, "a") as f:
        f.attrs["backbone"] = "synthetic|pool=mean"
    with pytest.raises(
        CheckpointError, match=r"teacher main .* backbone synthetic but data\.path="
    ):
        _train(
            tmp_path,
            pooled,
            "draft",
            "debug=fdr",
            f"model.module.teacher_ckpt={main['exported']}",
        )


def test_bad_resume_and_split_values_fail_in_one_line(tmp_path, synthetic_store, tokenizer_ckpt):
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(tokenizer_ckpt.read_bytes()[:5000])
    with pytest.raises(
        CheckpointError, match=r"truncated\.ckpt: not a readable checkpoint.*ckpt_path"
    ):
        _train(tmp_path, synthetic_store, "tokenizer", "debug=fdr", f"ckpt_path={truncated}")
    with pytest.raises(
        CheckpointError, match=r"ckpt_path is a tokenizer checkpoint but this run trains model=main"
    ):
        _train(tmp_path, synthetic_store, "main", "debug=fdr", f"ckpt_path={tokenizer_ckpt}")
    with pytest.raises(ValueError, match=r"data\.val_fraction=0 leaves no validation episodes"):
        _train(tmp_path, synthetic_store, "tokenizer", "debug=fdr", "data.val_fraction=0")


def test_train_py_runs_from_the_command_line(tmp_path, synthetic_store):
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        *_overrides(synthetic_store, tmp_path, "tokenizer", "debug=fdr"),
        f"hydra.run.dir={tmp_path / 'cli'}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "cli/.hydra/config.yaml").exists()


def test_draft_distills_from_a_main_checkpoint(tmp_path, synthetic_store, tokenizer_ckpt):
    main = _train(
        tmp_path, synthetic_store, "main", "trainer.max_epochs=1", "trainer.limit_train_batches=2"
    )
    metrics = _train(
        tmp_path,
        synthetic_store,
        "draft",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        f"model.module.teacher_ckpt={main['exported']}",
    )
    assert "val/acc_L0" in metrics
    from rsdvla.models.draft_module import greedy_layers

    teacher = MainModel.from_checkpoint(main["exported"])
    hidden = torch.randn(5, 32)
    codes = greedy_layers(teacher, hidden, 3, batch_size=2)
    state, prev = teacher.start(hidden), None
    for layer in range(3):
        prev = teacher.step(state, prev).argmax(-1)
        assert torch.equal(codes[:, layer].long(), prev)
    narrow = write_synthetic_store(tmp_path / "narrow.h5", hidden_dim=16)
    with pytest.raises(
        CheckpointError, match=r"teacher main has hidden_dim=32 but draft\.hidden_dim=16"
    ):
        _train(
            tmp_path,
            narrow,
            "draft",
            "debug=fdr",
            "data.hidden_dim=16",
            f"model.module.teacher_ckpt={main['exported']}",
        )
