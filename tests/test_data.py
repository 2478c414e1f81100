"""Hidden-state store, normalization and datamodule: formats, splits and one-line errors."""

import h5py
import numpy as np
import pytest
import torch

from rsdvla.data import ActionNormalizer, HiddenStateStore, HiddenStateStoreWriter, StoreError
from rsdvla.data.datamodule import HiddenStateDataModule
from rsdvla.data.split import split_episodes


def test_normalizer_maps_q01_q99_to_unit_range_and_leaves_gripper():
    raw = np.random.default_rng(0).normal(size=(10000, 7)).astype(np.float32)
    raw[:, 6] = np.sign(raw[:, 6])
    norm = ActionNormalizer.fit(raw)
    x = norm.normalize(raw)
    assert np.allclose(np.quantile(x[:, :6], 0.01, axis=0), -1, atol=1e-3)
    assert np.allclose(np.quantile(x[:, :6], 0.99, axis=0), 1, atol=1e-3)
    assert np.array_equal(x[:, 6], raw[:, 6])
    inside = np.all(np.abs(x[:, :6]) < 1, axis=1)
    assert np.allclose(norm.unnormalize(x)[inside], raw[inside], atol=1e-5)
    t = torch.from_numpy(raw[:5])
    assert torch.allclose(norm.normalize(t), torch.from_numpy(x[:5]))
    again = ActionNormalizer.from_dict(norm.to_dict())
    assert np.allclose(again.normalize(raw), x)


def test_normalizer_refuses_nan_and_missing_stats():
    with pytest.raises(ValueError, match="NaN"):
        ActionNormalizer.fit(np.array([[np.nan] * 7]))
    with pytest.raises(ValueError, match="q99"):
        ActionNormalizer.from_dict({"q01": [0] * 7}, source="ckpt.pt")


def test_split_is_by_episode_and_deterministic():
    episodes = np.repeat(np.arange(20), 5)
    train, val = split_episodes(episodes, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)
    assert np.array_equal(split_episodes(episodes, 0.2, seed=3)[1], val)


def test_datamodule_serves_batches_split_by_episode(synthetic_store):
    dm = HiddenStateDataModule(
        str(synthetic_store), hidden_dim=32, batch_size=16, val_fraction=0.25
    )
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert batch["hidden"].shape == (16, 32) and batch["hidden"].dtype == torch.float32
    assert batch["actions"].shape == (16, 8, 7)
    episodes = HiddenStateStore(synthetic_store).load(["episode"])["episode"]
    _, val_ids = split_episodes(episodes, 0.25, 0)
    assert len(dm.val_set) == np.isin(episodes, val_ids).sum() > 0
    assert len(dm.train_set) + len(dm.val_set) == len(episodes)


def test_store_width_mismatch_names_file_and_fix(synthetic_store):
    with pytest.raises(StoreError, match=r"store\.h5.*width 32.*data\.hidden_dim=32"):
        HiddenStateDataModule(str(synthetic_store), hidden_dim=4096)


def test_missing_and_truncated_stores_give_one_line_errors(tmp_path, synthetic_store):
    with pytest.raises(StoreError, match="extract.py"):
        HiddenStateStore(tmp_path / "nope.h5")
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(synthetic_store.read_bytes()[:5000])
    with pytest.raises(StoreError, match="trunc.h5"):
        HiddenStateStore(truncated)
    inconsistent = tmp_path / "bad.h5"
    inconsistent.write_bytes(synthetic_store.read_bytes())
    with h5py.File(inconsistent, "a") as f:
        f["episode"].resize(3, axis=0)
    with pytest.raises(StoreError, match=r"`episode` has 3 rows"):
        HiddenStateStore(inconsistent)


def test_nan_actions_are_refused_with_row(tmp_path, synthetic_store):
    bad = tmp_path / "nan.h5"
    bad.write_bytes(synthetic_store.read_bytes())
    with h5py.File(bad, "a") as f:
        f["actions"][5, 0, 0] = np.nan
    with pytest.raises(StoreError, match=r"nan.h5: `actions` row 5"):
        HiddenStateStore(bad).load()
    writer = HiddenStateStoreWriter(
        tmp_path / "w.h5", 4, "x", ActionNormalizer([0] * 7, [1] * 7).to_dict(), ["t"]
    )
    with pytest.raises(StoreError, match="NaN"):
        writer.append_episode(0, np.zeros((2, 4)), np.full((2, 8, 7), np.inf), 0)
    writer.close()


def test_a_kill_while_the_partial_file_is_created_leaves_nothing_to_refuse(tmp_path):
    # the new file is written whole as <path>.partial.new and renamed: a kill before the rename
    # leaves only that (here: its first bytes), which the next run overwrites
    path = tmp_path / "s.h5"
    stats = ActionNormalizer([0] * 7, [1] * 7).to_dict()
    half = tmp_path / "s.h5.partial.new"
    half.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(88))  # a superblock cut off at 96 bytes
    writer = HiddenStateStoreWriter(path, 4, "x", stats, ["t"])
    assert not half.exists() and writer.completed_episodes == set()
    writer.append_episode(0, np.ones((3, 4)), np.zeros((3, 8, 7)), 0)
    writer.finalize()
    assert HiddenStateStore(path).load()["episode"].tolist() == [0, 0, 0]


def test_writer_resumes_a_partial_store_without_duplicates(tmp_path):
    stats = ActionNormalizer([0] * 7, [1] * 7).to_dict()
    path = tmp_path / "s.h5"
    writer = HiddenStateStoreWriter(path, 4, "x", stats, ["t"])
    writer.append_episode(0, np.ones((3, 4)), np.zeros((3, 8, 7)), 0)
    # simulate a kill in the middle of episode 1: rows written, bookkeeping not committed
    writer.file["hidden"].resize(5, axis=0)
    writer.close()
    assert not path.exists() and path.with_name("s.h5.partial").exists()
    writer = HiddenStateStoreWriter(path, 4, "x", stats, ["t"])
    assert writer.completed_episodes == {0}
    writer.append_episode(0, np.ones((3, 4)), np.zeros((3, 8, 7)), 0)  # already done: skipped
    writer.append_episode(1, np.full((2, 4), 2.0), np.zeros((2, 8, 7)), 0)
    writer.finalize()
    data = HiddenStateStore(path).load()
    assert data["episode"].tolist() == [0, 0, 0, 1, 1]
    assert data["step"].tolist() == [0, 1, 2, 0, 1]
    HiddenStateStoreWriter(tmp_path / "other.h5", 4, "x", stats, ["t"]).close()  # leaves a .partial
    with pytest.raises(StoreError, match=r"other.h5.partial: attribute `hidden_dim`"):
        HiddenStateStoreWriter(tmp_path / "other.h5", 8, "x", stats, ["t"])
