"""One LightningDataModule for the tokenizer, the main model and the draft model.

Serves batches ``{"hidden": [B, H] float32, "actions": [B, T, A], "tokens": [B, L, N]}`` from a
hidden-state store held in memory. ``tokens`` (the tokenizer's codes as layer tokens ``[B, L, N]``) are computed once at
setup with the tokenizer checkpoint named in config; the tokenizer itself trains on actions only.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from rsdvla.data.split import split_episodes
from rsdvla.data.store import HiddenStateStore, StoreError


class _InMemoryBatches(Dataset):
    """Indexable by a list of sample indices: returns a whole batch with one gather per field."""

    def __init__(self, fields: dict[str, torch.Tensor]):
        self.fields = fields
        self.length = len(next(iter(fields.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: list[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(index)
        return {
            k: (v[idx].float() if v.dtype == torch.float16 else v[idx])
            for k, v in self.fields.items()
        }


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of sample indices for one rank: ``list[int]`` of length ``batch_size`` (last may be shorter).

    Every epoch the indices ``0..length-1`` are permuted with a generator seeded by
    ``(seed, epoch)`` (``shuffle``), padded by wrapping around to a multiple of
    ``num_replicas`` (every rank runs the same number of steps, as DDP needs) and dealt
    round-robin: rank ``r`` takes positions ``r, r + R, ...``. The ranks' shards are disjoint
    apart from that padding. ``set_epoch`` (Lightning calls it) changes the permutation.
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        num_replicas: int = 1,
    ):
        if batch_size < 1:
            raise ValueError(f"data.batch_size={batch_size}: set data.batch_size >= 1")
        self.length, self.batch_size, self.shuffle, self.seed = length, batch_size, shuffle, seed
        self.rank, self.num_replicas, self.epoch = rank, num_replicas, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def shard(self) -> torch.Tensor:
        """This rank's indices for the current epoch, in order."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=g)
        else:
            order = torch.arange(self.length)
        padded = self.per_rank() * self.num_replicas
        if padded > self.length:
            order = torch.cat([order, order[: padded - self.length]])
        return order[self.rank :: self.num_replicas]

    def __iter__(self):
        yield from (batch.tolist() for batch in self.shard().split(self.batch_size))

    def per_rank(self) -> int:
        """Samples each rank gets per epoch (``ceil(length / num_replicas)``, padding included)."""
        return -(-self.length // self.num_replicas) if self.length else 0

    def __len__(self) -> int:
        return -(-self.per_rank() // self.batch_size)


class HiddenStateDataModule(L.LightningDataModule):
    """Hidden-state store -> train/val loaders split by episode.

    Args:
        path: the store (``python extract.py`` writes it).
        hidden_dim: expected H; a store of another width is an error naming both.
        tokenizer_ckpt: tokenizer checkpoint used to compute ``tokens``; None serves actions only.
        load_hidden: False for the tokenizer (actions only, less memory).
        batch_size, val_fraction, seed, num_workers: the usual.
    """

    def __init__(
        self,
        path: str,
        hidden_dim: int | None = None,
        tokenizer_ckpt: str | None = None,
        load_hidden: bool = True,
        batch_size: int = 256,
        val_fraction: float = 0.1,
        seed: int = 0,
        num_workers: int = 0,
        name: str = "store",
    ):
        super().__init__()
        self.path = Path(path)
        self.hidden_dim = hidden_dim
        self.tokenizer_ckpt = tokenizer_ckpt
        self.load_hidden = load_hidden
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.num_workers = num_workers
        self.store = HiddenStateStore(self.path)  # fails early, naming the file, if unusable
        if hidden_dim is not None and self.store.hidden_dim != hidden_dim:
            raise StoreError(
                f"{self.path}: `hidden` has width {self.store.hidden_dim} but data.hidden_dim={hidden_dim}; "
                f"set data.hidden_dim={self.store.hidden_dim} (models read it) or use a store from the matching backbone"
            )
        self.action_stats = self.store.action_stats
        self.tokenizer = None  # the tokenizer of ``tokens`` (either family), read once
        if tokenizer_ckpt is not None:
            from rsdvla.tokenizer import load_tokenizer

            self.tokenizer = load_tokenizer(tokenizer_ckpt, field="tokenizer.ckpt")
        self.train_set: _InMemoryBatches | None = None
        self.val_set: _InMemoryBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        keys = ["actions", "episode"] + (["hidden"] if self.load_hidden else [])
        arrays = self.store.load(keys)
        fields = {"actions": torch.from_numpy(arrays["actions"])}
        if self.load_hidden:
            fields["hidden"] = torch.from_numpy(arrays["hidden"])
        if self.tokenizer_ckpt is not None:
            fields["tokens"] = self._tokens(fields["actions"])
        train_ids, val_ids = split_episodes(arrays["episode"], self.val_fraction, self.seed)
        episode = arrays["episode"]
        train_idx = torch.from_numpy(np.flatnonzero(np.isin(episode, train_ids)))
        val_idx = torch.from_numpy(np.flatnonzero(np.isin(episode, val_ids)))
        self.train_set = _InMemoryBatches({k: v[train_idx] for k, v in fields.items()})
        self.val_set = _InMemoryBatches({k: v[val_idx] for k, v in fields.items()})

    def _tokens(self, actions: torch.Tensor) -> torch.Tensor:
        tokenizer = self.tokenizer
        if tuple(actions.shape[1:]) != (tokenizer.config.chunk_size, tokenizer.config.action_dim):
            raise StoreError(
                f"{self.path}: `actions` chunks are {tuple(actions.shape[1:])} but tokenizer {self.tokenizer_ckpt} "
                f"expects ({tokenizer.config.chunk_size}, {tokenizer.config.action_dim}); retrain the tokenizer on this store"
            )
        tokens = [tokenizer.codes_to_layers(tokenizer.encode(a)) for a in actions.split(8192)]
        return torch.cat(tokens).to(torch.uint8 if tokenizer.levels <= 256 else torch.long)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        """Whole batches gathered in one indexing call; sharded over the ranks of a DDP run.

        The sampler yields index lists and ``batch_size=None`` turns off collation, so Lightning
        must not re-wrap it: ``train.py`` builds the trainer with ``use_distributed_sampler=False``.
        """
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return DataLoader(
            dataset,
            sampler=ShardedBatchSampler(
                len(dataset), self.batch_size, shuffle, self.seed, rank=rank, num_replicas=world
            ),
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
