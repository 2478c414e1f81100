"""Extraction: run a backbone over every step of every LIBERO demo and write a hidden-state store.

``run(cfg)``:
1. builds the backbone (``cfg.backbone`` via ``rsdvla.cli.build``; openvla_oft fails here
   on a machine without a GPU, before anything is read);
2. indexes and validates the demos (only the observation keys the backbone needs);
3. fits the action statistics over all demos;
4. writes ``<out>.partial`` episode by episode (hidden ``[n, H]`` in batches of ``batch_size``,
   normalized action chunks ``[n, 8, 7]``), skipping episodes a previous killed run committed;
5. renames it to ``out`` (atomic).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from rsdvla.backbones.base import Backbone
from rsdvla.cli import build, check_writable
from rsdvla.data.libero_demos import Episode, LiberoDemoSet, action_chunks
from rsdvla.data.store import HiddenStateStore, HiddenStateStoreWriter, StoreError, partial_path

log = logging.getLogger(__name__)


def _demo_sources(demos) -> str | list[str]:
    if OmegaConf.is_list(demos) or isinstance(demos, (list, tuple)):
        return [str(d) for d in demos]
    return str(demos)


def encode_episode(
    backbone: Backbone, episode: Episode, batch_size: int, progress: tqdm | None = None
) -> np.ndarray:
    """All steps of one episode -> hidden states ``[T, H]`` float32, in batches of ``batch_size``."""
    parts = []
    for start in range(0, len(episode), batch_size):
        stop = min(start + batch_size, len(episode))
        batch = {key: value[start:stop] for key, value in episode.obs.items()}
        batch["instruction"] = [episode.instruction] * (stop - start)
        parts.append(backbone.encode(batch).float().numpy())
        if progress is not None:
            progress.update(stop - start)
    return np.concatenate(parts, axis=0)


def check_finite_hidden(hidden: np.ndarray, episode: Episode, backbone_id: str) -> None:
    """Refuse NaN/inf hidden states ``[T, H]``, naming the demo file, demo and first bad step."""
    bad = np.flatnonzero(~np.isfinite(hidden).all(axis=1))
    if len(bad):
        ref = episode.ref
        raise StoreError(
            f"{ref.path}: data/{ref.demo} step {int(bad[0])}: backbone hidden state is NaN or inf "
            f"({len(bad)} such steps in this demo; backbone {backbone_id}); check that demo's observations "
            "and the backbone's settings (e.g. precision), nothing was written for it"
        )


def fixed_initial_states(demos: LiberoDemoSet) -> list[int] | None:
    """The suite's fixed initial state indices the demos started from (sorted), from each demo's
    ``init_state_index`` attribute (``rsdvla.collect``: -1 for a state LIBERO's sampler drew).
    None when a demo does not say (e.g. demos from elsewhere): unknown, not "none"."""
    import h5py

    used: set[int] = set()
    for path in demos.files:
        with h5py.File(path, "r") as f:
            for ref in (r for r in demos.demos if r.path == path):
                index = f["data"][ref.demo].attrs.get("init_state_index")
                if index is None:
                    return None
                if int(index) >= 0:
                    used.add(int(index))
    return sorted(used)


def fit_statistics(demos: LiberoDemoSet):
    """Action statistics over all demos; a NaN/inf action is named by file, demo and step."""
    actions = demos.all_actions()  # demos in ``demos.demos`` order, concatenated
    bad = np.flatnonzero(~np.isfinite(actions).all(axis=1))
    if len(bad):
        offsets = np.cumsum([0] + [ref.length for ref in demos.demos])
        index = int(np.searchsorted(offsets, bad[0], side="right") - 1)
        ref = demos.demos[index]
        raise StoreError(
            f"{ref.path}: data/{ref.demo}/actions step {int(bad[0] - offsets[index])} is NaN or inf "
            f"({len(bad)} such steps in all); fix or remove that demo, or point `demos` at clean files"
        )
    from rsdvla.data.normalization import ActionNormalizer

    return ActionNormalizer.fit(actions)


def _check_resume(writer: HiddenStateStoreWriter, stats: dict, sources: list[str]) -> None:
    """A resumed .partial must have been started from the same demos (same statistics and files)."""
    recorded = {
        "action_stats": json.loads(writer.file.attrs["action_stats"]),
        "source_files": json.loads(writer.file.attrs["source_files"]),
    }
    for key, mine in (("action_stats", stats), ("source_files", sources)):
        if recorded[key] != mine:
            raise StoreError(
                f"{writer.partial}: attribute `{key}` differs from this run's demos; rerun with the same `demos` "
                "or start over with overwrite=true"
            )


def check_finished_store(out: Path, demos: LiberoDemoSet) -> None:
    """A finished store at ``out`` is reused only when it was extracted from ``demos`` (the same
    files and the same action statistics); otherwise one line: its demos changed since."""
    import h5py

    with h5py.File(out, "r") as f:
        recorded = {
            "source_files": json.loads(f.attrs.get("source_files", "[]")),
            "action_stats": json.loads(f.attrs.get("action_stats", "{}")),
        }
    mine = {
        "source_files": [str(p) for p in demos.files],
        "action_stats": fit_statistics(demos).to_dict(),
    }
    for key in ("source_files", "action_stats"):
        if json.loads(json.dumps(mine[key])) != recorded[key]:
            raise StoreError(
                f"{out}: already extracted, but from other demos (its attribute `{key}` differs from "
                "what `demos` holds now); set overwrite=true to extract again, or choose another out"
            )


def run(cfg: DictConfig) -> dict:
    """Extract a hidden-state store; returns ``{"samples", "episodes", "seconds", "samples_per_second", "path"}``.

    Config fields: ``backbone`` (group), ``demos`` (dir, file or list), ``out``, ``batch_size``,
    ``chunk_size``, ``max_episodes`` (stop after this many newly written episodes, leaving the
    ``.partial`` to resume; null = all), ``overwrite`` (recompute a finished store), ``progress``.
    """
    for field in ("batch_size", "chunk_size"):  # checked before any file is created
        if int(cfg[field]) < 1:
            raise ValueError(f"extract: {field}={cfg[field]}; set {field}>=1 (e.g. {field}=8)")
    out = Path(str(cfg.out))
    overwrite = bool(cfg.get("overwrite", False))
    if out.exists() and not overwrite:
        store = HiddenStateStore(out)
        check_finished_store(out, LiberoDemoSet(_demo_sources(cfg.demos), required_obs=()))
        log.info(
            "%s already exists (%d samples, from these demos); set overwrite=true to extract again",
            out,
            len(store),
        )
        return {
            "samples": 0,
            "episodes": 0,
            "seconds": 0.0,
            "samples_per_second": 0.0,
            "path": str(out),
        }

    check_writable(out, "out", "cannot be written")
    started = time.perf_counter()
    backbone = build(cfg.backbone)  # openvla_oft without CUDA: its one-line error, unwrapped
    backbone.eval()
    demos = LiberoDemoSet(_demo_sources(cfg.demos), required_obs=backbone.required_obs)
    normalizer = fit_statistics(demos)
    stats = normalizer.to_dict()
    sources = [str(p) for p in demos.files]
    log.info(
        "%d demos, %d samples, %d tasks from %d file(s); backbone %s (H=%d)",
        len(demos),
        demos.num_samples,
        len(demos.instructions),
        len(demos.files),
        backbone.backbone_id,
        backbone.hidden_dim,
    )

    if (
        overwrite and partial_path(out).exists()
    ):  # start over; a finished `out` stays until replaced
        log.info("overwrite=true: removing the unfinished %s", partial_path(out))
        partial_path(out).unlink()
    writer = HiddenStateStoreWriter(
        out,
        backbone.hidden_dim,
        backbone.backbone_id,
        stats,
        demos.instructions,
        sources,
        chunk_size=int(cfg.chunk_size),
        action_dim=7,
    )
    try:
        _check_resume(writer, stats, sources)
        writer.file.attrs["fixed_initial_states"] = json.dumps(fixed_initial_states(demos))
        done = writer.completed_episodes
        already = sum(ref.length for ref in demos.demos if ref.episode in done)
        if done:
            log.info(
                "resuming %s: %d episodes (%d samples) already committed",
                writer.partial,
                len(done),
                already,
            )
        limit = cfg.get("max_episodes")
        written_episodes = written_samples = 0
        progress = tqdm(
            total=demos.num_samples,
            initial=already,
            unit="sample",
            desc="extract",
            disable=not cfg.get("progress", True),
        )
        with progress, torch.inference_mode():
            for episode in demos.episodes(skip=done):
                if limit is not None and written_episodes >= int(limit):
                    break
                hidden = encode_episode(backbone, episode, int(cfg.batch_size), progress)
                check_finite_hidden(hidden, episode, backbone.backbone_id)
                chunks = normalizer.normalize(action_chunks(episode.actions, int(cfg.chunk_size)))
                writer.append_episode(episode.episode, hidden, chunks, episode.task_id)
                written_episodes += 1
                written_samples += len(episode)
        committed = len(writer.completed_episodes)
        complete = committed == len(demos)
        if complete:
            writer.finalize()
            log.info("wrote %s", out)
        else:
            writer.close()
            log.info(
                "stopped early: %s holds %d/%d episodes; rerun to continue",
                writer.partial,
                committed,
                len(demos),
            )
    except BaseException:
        writer.close()
        raise
    seconds = time.perf_counter() - started
    return {
        "samples": written_samples,
        "episodes": written_episodes,
        "seconds": seconds,
        "samples_per_second": written_samples / seconds if seconds > 0 else 0.0,
        "path": str(out if complete else writer.partial),
    }
