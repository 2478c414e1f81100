"""Nothing non-finite is published or decoded: diverged training, NaN hidden states, NaN weights."""

from pathlib import Path

import pytest
import torch
from conftest import compose_config, train_on_store
from helpers_ckpt import write_tiny_checkpoints

from rsdvla.checkpoints import CheckpointError, stamp
from rsdvla.data.store import StoreError

pytestmark = pytest.mark.integration


def _train(tmp_path: Path, store: Path, *extra: str) -> dict:
    return train_on_store(tmp_path, store, *extra, train_batches=3)


def test_diverged_training_stops_and_keeps_the_published_checkpoint(tmp_path, synthetic_store):
    good = Path(_train(tmp_path, synthetic_store)["exported"])
    before = good.read_bytes()
    with pytest.raises(RuntimeError, match=r"non-finite.*model\.module\.optimizer\.lr"):
        _train(tmp_path, synthetic_store, "model.module.optimizer.lr=1e30")
    assert good.read_bytes() == before  # the published artifact was not replaced
    assert not good.with_name(good.name + ".tmp").exists()


def test_a_checkpoint_with_nan_weights_is_refused_at_load(tmp_path):
    ckpts = write_tiny_checkpoints(tmp_path / "ck", hidden_dim=16)
    ckpt = torch.load(ckpts["main"], weights_only=True)
    name = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))
    torch.save(stamp(ckpt), ckpts["main"])  # a consistent hash: only the values are wrong
    from rsdvla.models import MainModel

    with pytest.raises(CheckpointError, match=rf"main\.ckpt: tensor `{name}` has NaN or inf"):
        MainModel.from_checkpoint(ckpts["main"])


def test_extraction_refuses_nan_hidden_states_naming_episode_and_step(tmp_path, monkeypatch):
    import rsdvla.extract
    from rsdvla.backbones.state import StateBackbone

    demos = Path(__file__).resolve().parents[1] / "data" / "sample" / "libero_object"
    first = sorted(demos.glob("*.hdf5"))[0]
    encode = StateBackbone.encode

    def poisoned(self, batch):
        hidden = encode(self, batch)
        if len(hidden) > 5:
            hidden[5, 3] = float("nan")
        return hidden

    monkeypatch.setattr(StateBackbone, "encode", poisoned)
    cfg = compose_config(
        "extract", [f"demos={first}", f"out={tmp_path / 'store.h5'}", "progress=false"], tmp_path
    )
    with pytest.raises(
        StoreError,
        match=rf"{first.name}: data/demo_\d+ step 5: backbone hidden state is NaN or inf",
    ):
        rsdvla.extract.run(cfg)
    assert not (tmp_path / "store.h5").exists()
