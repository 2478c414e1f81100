"""``trainer=ddp`` on 2 CPU processes (gloo): whole batches, a distinct shuffled shard per rank, loss falls."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_synthetic_store

from rsdvla.data.datamodule import ShardedBatchSampler

ROOT = Path(__file__).resolve().parents[1]

RECORDER = '''
import json, os
import lightning as L


class RecordBatches(L.Callback):
    """Per rank: action batch shapes, a fingerprint of every sample seen in epoch 0, train loss per epoch."""

    def __init__(self, out):
        self.out, self.shapes, self.samples, self.losses = out, [], [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.shapes.append(list(batch["actions"].shape))
        if trainer.current_epoch == 0:
            self.samples.extend(round(float(v), 4) for v in batch["actions"].flatten(1).sum(1) * 1000)

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.epoch_losses.append(float(outputs["loss"]))

    def on_train_epoch_end(self, trainer, pl_module):
        self.losses.append(sum(self.epoch_losses) / len(self.epoch_losses))
        path = os.path.join(self.out, f"rank{trainer.global_rank}.json")
        with open(path, "w") as f:
            json.dump({"world": trainer.world_size, "shapes": self.shapes,
                       "samples": self.samples, "losses": self.losses}, f)
'''


def test_sharded_batch_sampler_deals_disjoint_shuffled_shards():
    samplers = [ShardedBatchSampler(10, 3, True, seed=1, rank=r, num_replicas=2) for r in (0, 1)]
    shards = [[i for batch in s for i in batch] for s in samplers]
    assert [len(list(s)) for s in samplers] == [2, 2] == [len(s) for s in samplers]
    assert sorted(shards[0] + shards[1]) == list(range(10))  # disjoint, together everything
    assert shards[0] != sorted(shards[0]) or shards[1] != sorted(shards[1])  # shuffled
    before = shards[0]
    samplers[0].set_epoch(1)
    assert [i for batch in samplers[0] for i in batch] != before  # reshuffled per epoch
    padded = [ShardedBatchSampler(5, 4, False, rank=r, num_replicas=2) for r in (0, 1)]
    assert [list(s) for s in padded] == [[[0, 2, 4]], [[1, 3, 0]]]  # equal step counts per rank
    assert list(ShardedBatchSampler(5, 2, False)) == [[0, 1], [2, 3], [4]]


@pytest.mark.integration
def test_ddp_on_two_cpu_processes_trains_on_distinct_shards(tmp_path):
    store = write_synthetic_store(tmp_path / "store.h5", episodes=16, steps=32)
    (tmp_path / "recorder.py").write_text(RECORDER)
    out = tmp_path / "record"
    out.mkdir()
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "model=tokenizer",
        "data=libero_hidden",
        f"data.path={store}",
        "data.hidden_dim=32",
        "data.batch_size=16",
        "data.val_fraction=0.25",
        f"paths.root_dir={tmp_path}",
        "logger=none",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "trainer.max_epochs=4",
        "model.module.tokenizer.hidden=32",
        "model.module.optimizer.lr=1e-2",
        "callbacks.progress_bar=null",
        "+callbacks.record._target_=recorder.RecordBatches",
        f"+callbacks.record.out={out}",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.update(OMP_NUM_THREADS="1", RSDVLA_TRACEBACK="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    # 12 training episodes x 32 steps = 384 samples -> 192 per rank -> 12 batches of 16 per epoch
    for r in ranks:
        assert all(shape == [16, 8, 7] for shape in r["shapes"])  # whole batches, not [1]
        assert len(r["shapes"]) == 4 * 12 and len(r["samples"]) == 192
    seen = [set(r["samples"]) for r in ranks]
    assert len(seen[0] & seen[1]) <= 2  # distinct shards (a collision of the fingerprint is rare)
    assert ranks[0]["samples"] != sorted(ranks[0]["samples"])  # shuffled
    assert ranks[0]["losses"][-1] < 0.7 * ranks[0]["losses"][0]
    assert (tmp_path / "outputs/artifacts/libero_hidden/tokenizer.ckpt").exists()
    assert torch.load(
        tmp_path / "outputs/artifacts/libero_hidden/tokenizer.ckpt", weights_only=True
    )["content_hash"].startswith("sha256:")
