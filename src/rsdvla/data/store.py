"""Hidden-state store: backbone hidden states and normalized action chunks in one HDF5 file.

Layout (see docs/architecture.md):
    hidden       float16 [N, H]
    actions      float32 [N, T, A]   normalized chunks, padded with the episode's last action
    episode      int64   [N]
    step         int64   [N]
    task_id      int64   [N]
    instructions str     [num_tasks]
    checksums    float64 [E, 3]      (episode, sum of hidden, sum of actions) as written
    attrs: backbone, hidden_dim, action_stats (JSON), source_files (JSON), chunk_size,
           format_version, committed_rows, completed_episodes (JSON)

The writer works on ``<path>.partial``; each episode is committed (rows + bookkeeping
attributes, then a flush) before the next starts, so a killed job resumes from the last
committed episode and nothing is written twice. ``finalize()`` reads every episode back, checks
it against ``checksums`` (a full disk can make HDF5 lose writes silently) and renames the file to
``path``. Free space is checked before each episode.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
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


def _clear_hint(partial: Path) -> str:
    return f"delete it (rm {partial}) or rerun with overwrite=true to start the extraction over"


def check_free_space(folder: Path, needed: int, target: Path) -> None:
    """Refuse to write ``needed`` bytes (with 2x margin + 1 MiB) when the disk has less free.

    HDF5 does not report a full disk reliably (writes fail inside its cache, files look whole),
    so the writer checks before each episode instead of after.
    """
    free = shutil.disk_usage(folder).free
    if free < 2 * needed + (1 << 20):
        raise StoreError(
            f"{target}: disk full: {free / 2**20:.1f} MiB free in {folder}, the next episode needs "
            f"~{(2 * needed + (1 << 20)) / 2**20:.1f} MiB with margin; free space or point `out` at another disk, then rerun "
            "(committed episodes are kept)"
        )


def _checksums(hidden: np.ndarray, actions: np.ndarray) -> tuple[float, float]:
    return float(np.asarray(hidden, np.float64).sum()), float(np.asarray(actions, np.float64).sum())


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
        self._lock = self._acquire_lock()
        try:
            attrs = {
                "backbone": backbone,
                "hidden_dim": int(hidden_dim),
                "action_stats": json.dumps(action_stats),
                "source_files": json.dumps([str(s) for s in source_files]),
                "chunk_size": int(chunk_size),
                "format_version": FORMAT_VERSION,
            }
            if self.partial.exists():
                self.file = self._open_partial()
                for key in ("backbone", "hidden_dim", "chunk_size"):
                    if self.file.attrs.get(key) != attrs[key]:
                        raise StoreError(
                            f"{self.partial}: attribute `{key}` is {self.file.attrs.get(key)!r}, this run writes "
                            f"{attrs[key]!r}; rerun with the same settings, or start over with overwrite=true (or rm {self.partial})"
                        )
                rows = int(self.file.attrs["committed_rows"])
                for name in ("hidden", "actions", "episode", "step", "task_id"):
                    self.file[name].resize(
                        rows, axis=0
                    )  # drop an episode that was cut off mid-write
                try:
                    self.verify(self.completed_episodes, self.file)  # fail before extracting more
                except StoreError:
                    self.close()
                    raise
            else:
                check_free_space(self.partial.parent, 1 << 16, self.partial)
                # written whole under another name, then renamed: a run killed while creating
                # it leaves no half-written .partial for the next run to refuse
                fresh = Path(str(self.partial) + ".new")
                with h5py.File(fresh, "w") as f:
                    f.attrs.update(attrs)
                    f.attrs["committed_rows"] = 0
                    f.attrs["completed_episodes"] = "[]"
                    f.create_dataset(
                        "hidden",
                        (0, hidden_dim),
                        dtype="f2",
                        maxshape=(None, hidden_dim),
                        chunks=(64, hidden_dim),
                    )
                    f.create_dataset(
                        "actions",
                        (0, chunk_size, action_dim),
                        dtype="f4",
                        maxshape=(None, chunk_size, action_dim),
                        chunks=(256, chunk_size, action_dim),
                    )
                    for name in ("episode", "step", "task_id"):
                        f.create_dataset(name, (0,), dtype="i8", maxshape=(None,), chunks=(4096,))
                    # (episode, sum of hidden, sum of actions) per committed episode, verified at finalize
                    f.create_dataset(
                        "checksums", (0, 3), dtype="f8", maxshape=(None, 3), chunks=(1024, 3)
                    )
                    f.create_dataset(
                        "instructions", data=np.array(list(instructions), dtype=object), dtype=_STR
                    )
                os.replace(fresh, self.partial)
                self.file = h5py.File(self.partial, "a")
            self.hidden_dim = int(hidden_dim)
        except BaseException:
            self._release_lock()
            raise

    def _acquire_lock(self):
        """An exclusive lock on ``<path>.partial.lock`` for this writer's life: a second
        extraction to the same ``out`` is refused (instead of being told to delete the file the
        first is writing). The lock dies with its process, so a killed run leaves none."""
        from filelock import FileLock, Timeout

        lock_path = Path(str(self.partial) + ".lock")
        lock = FileLock(str(lock_path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise StoreError(
                f"{self.partial}: another extraction is writing it (lock {lock_path}); wait for it to "
                "finish (then this run has nothing to do), or pass another out=<path>"
            ) from None
        return lock

    def _release_lock(self) -> None:
        lock = getattr(self, "_lock", None)
        if lock is not None and lock.is_locked:
            lock.release()
            Path(lock.lock_file).unlink(missing_ok=True)

    def _open_partial(self) -> h5py.File:
        """Open a resumable ``.partial``; a damaged one (killed on a full disk) is named with the fix."""
        try:
            file = h5py.File(self.partial, "a")
        except Exception as err:  # HDF5 address/signature errors of a half-written file
            raise StoreError(
                f"{self.partial}: unfinished extraction is unreadable ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:80]}); {_clear_hint(self.partial)}"
            ) from None
        try:
            rows = int(file.attrs["committed_rows"])
            json.loads(file.attrs["completed_episodes"])
            short = [
                k
                for k in REQUIRED
                if k not in file or (k != "instructions" and file[k].shape[0] < rows)
            ]
        except Exception as err:
            file.close()
            raise StoreError(
                f"{self.partial}: unfinished extraction is damaged ({type(err).__name__}); {_clear_hint(self.partial)}"
            ) from None
        if short:
            file.close()
            raise StoreError(
                f"{self.partial}: unfinished extraction is damaged (datasets {short} shorter than committed_rows "
                f"{rows}); {_clear_hint(self.partial)}"
            )
        return file

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
        check_free_space(
            self.partial.parent, hidden.size * 2 + actions.nbytes + n * 24, self.partial
        )
        rows = int(self.file.attrs["committed_rows"])
        values = {
            "hidden": hidden.astype(np.float16),
            "actions": actions,
            "episode": np.full(n, episode, np.int64),
            "step": np.arange(n, dtype=np.int64),
            "task_id": np.full(n, task_id, np.int64),
        }
        try:
            for name, value in values.items():
                ds = self.file[name]
                ds.resize(rows + n, axis=0)
                ds[rows:] = value
            if "checksums" in self.file:
                sums = self.file["checksums"]
                committed = len(self.completed_episodes)
                sums.resize(committed + 1, axis=0)
                sums[committed] = (episode, *_checksums(values["hidden"], actions))
            self.file.attrs["committed_rows"] = rows + n
            self.file.attrs["completed_episodes"] = json.dumps(
                sorted(self.completed_episodes | {episode})
            )
            self.file.flush()
        except (OSError, RuntimeError) as err:
            full = getattr(err, "errno", None) == errno.ENOSPC or "No space left" in str(err)
            raise StoreError(
                f"{self.partial}: {'disk full' if full else 'write failed'} while writing episode {episode} "
                f"({type(err).__name__}); free space, then rerun (it resumes) or {_clear_hint(self.partial)}"
            ) from None

    def verify(self, completed: set[int], file: h5py.File | None = None) -> None:
        """Read every committed episode back and compare it with the checksums recorded when it
        was written: catches writes HDF5 lost on a full disk (files that look whole)."""
        if file is None:
            with h5py.File(self.partial, "r") as f:
                return self.verify(completed, f)
        if "checksums" not in file:  # a .partial from before checksums were recorded
            return
        recorded = {int(row[0]): (float(row[1]), float(row[2])) for row in file["checksums"][()]}
        rows = int(file.attrs["committed_rows"])
        episode = file["episode"][:rows]
        starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1]]).tolist() if rows else []
        found = {}
        for start, stop in zip(starts, [*starts[1:], rows][: len(starts)], strict=True):
            found[int(episode[start])] = _checksums(
                file["hidden"][start:stop], file["actions"][start:stop]
            )
        bad = sorted(ep for ep in completed if recorded.get(ep) != found.get(ep))
        if bad:
            raise StoreError(
                f"{self.partial}: episode(s) {bad[:5]} read back differently from what was written (full disk or "
                f"I/O error); {_clear_hint(self.partial)}"
            )

    def finalize(self) -> Path:
        """Close the partial file, verify it on disk, and rename it to the final path (atomic)."""
        completed = self.completed_episodes
        self.file.close()
        try:
            self.verify(completed)
            os.replace(self.partial, self.path)
        finally:
            self._release_lock()
        return self.path

    def close(self) -> None:
        """Close without finalizing; never raises (an error being reported must stay the one seen)."""
        try:
            if self.file.id.valid:
                self.file.close()
        except Exception:  # HDF5 flushing its cache onto a full disk
            pass
        self._release_lock()


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
        if self.path.is_dir():
            raise StoreError(
                f"{self.path}: is a directory, not a store file; point data.path at the .h5 file "
                "`python extract.py` wrote (its `out`)"
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

    def fingerprint(self) -> str:
        """The store's content fingerprint (:func:`store_fingerprint`), computed once per object."""
        if getattr(self, "_fingerprint", None) is None:
            self._fingerprint = store_fingerprint(self)
        return self._fingerprint


FINGERPRINT_ROWS = 64


def store_fingerprint(store: HiddenStateStore) -> str:
    """``sha256:<hex>`` of what a store holds, cheap to recompute (reads ~N * 8 bytes + 64 rows).

    Covers: the sample count, the chunk shape, the action statistics (canonical JSON), the whole
    episode index ``episode [N]``, and ``hidden``/``actions`` of 64 fixed rows spread evenly
    over the file. Two stores with the same backbone but other demos, statistics or rows differ;
    a copy of a store in another folder has the same fingerprint. The one function every
    checkpoint's lineage and every check uses.
    """
    import hashlib

    digest = hashlib.sha256()
    digest.update(f"{store.num_samples}|{store.hidden_dim}|{tuple(store.chunk_shape)}|".encode())
    digest.update(json.dumps(store.action_stats, sort_keys=True).encode())
    rows = np.unique(
        np.linspace(0, max(store.num_samples - 1, 0), FINGERPRINT_ROWS).astype(np.int64)
    )
    with h5py.File(store.path, "r") as f:
        digest.update(np.ascontiguousarray(f["episode"][()], dtype=np.int64).tobytes())
        if store.num_samples:
            for name in ("hidden", "actions"):
                digest.update(np.ascontiguousarray(f[name][rows]).tobytes())
    return "sha256:" + digest.hexdigest()
