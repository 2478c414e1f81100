"""Hidden-state store: backbone hidden states and normalized action chunks in one HDF5 file.

Layout (see docs/architecture.md):
    hidden       float16 [N, H]
    actions      float32 [N, T, A]   normalized chunks, padded with the episode's last action
    episode      int64   [N]
    step         int64   [N]
    task_id      int64   [N]
    instructions str     [num_tasks]
    attrs: backbone, hidden_dim, action_stats (JSON), source_files (JSON), chunk_size,
           format_version, committed_rows, completed_episodes (JSON)

The writer works on ``<path>.partial``; each episode is committed (rows + bookkeeping
attributes, then a flush) before the next starts, so a killed job resumes from the last
committed episode and nothing is written twice. ``finalize()`` renames it to ``path``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from rsdvla.data.normalization import ActionNormalizer

FORMAT_VERSION = 1
REQUIRED = ("hidden", "actions", "episode", "step", "task_id", "instructions")
_STR = h5py.string_dtype(encoding="utf-8")


class StoreError(ValueError):
    """A store file that cannot be used; the message names the file, the field and the fix."""


def partial_path(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".partial")


class HiddenStateStoreWriter:
    """Appends episodes to ``<path>.partial``; resumes an existing partial file.

    Args:
        path: final store path.
        hidden_dim: H, width of the backbone hidden state.
        backbone: backbone id recorded in the attributes.
        action_stats: normalization statistics dict (``ActionNormalizer.to_dict()``).
        instructions: instruction string per task id.
        source_files: demonstration files the store was made from.
        chunk_size, action_dim: T and A of the action chunks.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        hidden_dim: int,
        backbone: str,
        action_stats: dict,
        instructions: Sequence[str],
        source_files: Sequence[str] = (),
        chunk_size: int = 8,
        action_dim: int = 7,
    ):
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        attrs = {
            "backbone": backbone,
            "hidden_dim": int(hidden_dim),
            "action_stats": json.dumps(action_stats),
            "source_files": json.dumps([str(s) for s in source_files]),
            "chunk_size": int(chunk_size),
            "format_version": FORMAT_VERSION,
        }
        if self.partial.exists():
            self.file = h5py.File(self.partial, "a")
            for key in ("backbone", "hidden_dim", "chunk_size"):
                if self.file.attrs.get(key) != attrs[key]:
                    raise StoreError(
                        f"{self.partial}: attribute `{key}` is {self.file.attrs.get(key)!r}, this run writes "
                        f"{attrs[key]!r}; delete the .partial file to start over or rerun with the same settings"
                    )
            rows = int(self.file.attrs["committed_rows"])
            for name in ("hidden", "actions", "episode", "step", "task_id"):
                self.file[name].resize(rows, axis=0)  # drop an episode that was cut off mid-write
        else:
            self.file = h5py.File(self.partial, "w")
            self.file.attrs.update(attrs)
            self.file.attrs["committed_rows"] = 0
            self.file.attrs["completed_episodes"] = "[]"
            self.file.create_dataset(
                "hidden",
                (0, hidden_dim),
                dtype="f2",
                maxshape=(None, hidden_dim),
                chunks=(64, hidden_dim),
            )
            self.file.create_dataset(
                "actions",
                (0, chunk_size, action_dim),
                dtype="f4",
                maxshape=(None, chunk_size, action_dim),
                chunks=(256, chunk_size, action_dim),
            )
            for name in ("episode", "step", "task_id"):
                self.file.create_dataset(name, (0,), dtype="i8", maxshape=(None,), chunks=(4096,))
            self.file.create_dataset(
                "instructions", data=np.array(list(instructions), dtype=object), dtype=_STR
            )
            self.file.flush()
        self.hidden_dim = int(hidden_dim)

    @property
    def completed_episodes(self) -> set[int]:
        return set(json.loads(self.file.attrs["completed_episodes"]))

    def append_episode(
        self, episode: int, hidden: np.ndarray, actions: np.ndarray, task_id: int
    ) -> None:
        """Commit one episode: ``hidden [n, H]``, normalized ``actions [n, T, A]``."""
        hidden = np.asarray(hidden)
        actions = np.asarray(actions, dtype=np.float32)
        n = hidden.shape[0]
        if hidden.shape != (n, self.hidden_dim):
            raise StoreError(
                f"{self.partial}: `hidden` of episode {episode} has shape {hidden.shape}, expected [n, {self.hidden_dim}]"
            )
        if actions.shape[0] != n:
            raise StoreError(
                f"{self.partial}: episode {episode} has {n} hidden states but {actions.shape[0]} action chunks"
            )
        if not np.isfinite(actions).all() or not np.isfinite(hidden.astype(np.float32)).all():
            raise StoreError(
                f"{self.partial}: episode {episode} has NaN or inf in `hidden` or `actions`; fix the source demo"
            )
        if episode in self.completed_episodes:
            return
        rows = int(self.file.attrs["committed_rows"])
        values = {
            "hidden": hidden.astype(np.float16),
            "actions": actions,
            "episode": np.full(n, episode, np.int64),
            "step": np.arange(n, dtype=np.int64),
            "task_id": np.full(n, task_id, np.int64),
        }
        for name, value in values.items():
            ds = self.file[name]
            ds.resize(rows + n, axis=0)
            ds[rows:] = value
        self.file.attrs["committed_rows"] = rows + n
        self.file.attrs["completed_episodes"] = json.dumps(
            sorted(self.completed_episodes | {episode})
        )
        self.file.flush()

    def finalize(self) -> Path:
        """Close the partial file and rename it to the final path (atomic on one filesystem)."""
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


class HiddenStateStore:
    """Read-only view of a finished store; ``load()`` returns everything as numpy arrays."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            hint = (
                " (an unfinished .partial exists: rerun the extraction to complete it)"
                if partial_path(path).exists()
                else ""
            )
            raise StoreError(
                f"{self.path}: hidden-state store not found{hint}; create it with `python extract.py` "
                "or point `data.path` at an existing store"
            )
        try:
            with h5py.File(self.path, "r") as f:
                missing = [k for k in REQUIRED if k not in f]
                if missing:
                    raise StoreError(
                        f"{self.path}: missing dataset(s) {missing}; re-create the store with `python extract.py`"
                    )
                self.attrs = {
                    k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()
                }
                self.num_samples = f["hidden"].shape[0]
                self.hidden_dim = f["hidden"].shape[1]
                for k in ("actions", "episode", "step", "task_id"):
                    if f[k].shape[0] != self.num_samples:
                        raise StoreError(
                            f"{self.path}: `{k}` has {f[k].shape[0]} rows but `hidden` has {self.num_samples}; "
                            "the file is truncated or inconsistent: re-create it with `python extract.py`"
                        )
                self.chunk_shape = tuple(f["actions"].shape[1:])
                self.instructions = [
                    s.decode() if isinstance(s, bytes) else str(s) for s in f["instructions"][()]
                ]
        except OSError as err:
            raise StoreError(
                f"{self.path}: not a readable HDF5 file ({err}); re-create it with `python extract.py`"
            ) from err
        if "action_stats" not in self.attrs:
            raise StoreError(
                f"{self.path}: attribute `action_stats` is missing; re-create the store with `python extract.py`"
            )
        self.action_stats = json.loads(self.attrs["action_stats"])
        self.backbone = str(self.attrs.get("backbone", "unknown"))

    @property
    def normalizer(self) -> ActionNormalizer:
        return ActionNormalizer.from_dict(
            self.action_stats, source=f"{self.path}: attribute `action_stats`"
        )

    def load(
        self, keys: Sequence[str] = ("hidden", "actions", "episode", "step", "task_id")
    ) -> dict[str, np.ndarray]:
        with h5py.File(self.path, "r") as f:
            out = {k: f[k][()] for k in keys}
        if "actions" in out and not np.isfinite(out["actions"]).all():
            bad = int(
                np.flatnonzero(
                    ~np.isfinite(out["actions"]).reshape(len(out["actions"]), -1).all(1)
                )[0]
            )
            raise StoreError(
                f"{self.path}: `actions` row {bad} has NaN or inf; fix the source demo and re-extract"
            )
        return out

    def __len__(self) -> int:
        return self.num_samples
