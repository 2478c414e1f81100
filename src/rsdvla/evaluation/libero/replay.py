"""``compare --videos``: rerun the discordant episodes of two runs with videos on, side by side.

Each run's discordant episodes are rerun through the normal ``LiberoRunner`` (its plan restricted
to those episodes, ``env.videos=true``) into ``<out>/replay/<label>``, with the run's own settings
(its run file) and decoder stack (its Hydra config, ``.hydra/config.yaml``; the checkpoints must
still hash as recorded). Per-episode seeding makes a replay repeat its recorded episode:
:func:`check_reproduced` compares the replayed records with the originals. Then
``<out>/videos/<suite>_task<t>_trial<k>_<A>_vs_<B>.<mp4|gif>`` shows A | B frame by frame, each
with two bars underneath: green, the chunk's accepted drafted layers (share of k; grey for
main-only), red, its divergence from main-only (``max_abs_norm``, full bar = 1 normalized unit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from rsdvla.evaluation.libero.episodes import EpisodeKey, read_episode_file, record_key

log = logging.getLogger(__name__)

REPRODUCED_FIELDS = (
    "success",
    "steps",
    "init_state_index",
    "accepted_layers",
    "layer_acceptance",
    "divergence",
)
"""Record fields a replay must repeat (timings and dates differ by nature)."""
BAR_HEIGHT = 6


def replay_settings(run):
    """``LiberoEvalSettings`` of ``run`` (``compare.Run``) from its run file, with videos on."""
    from rsdvla.evaluation.libero.runner import LiberoEvalSettings

    known = {f.name for f in fields(LiberoEvalSettings)}
    recorded = {k: v for k, v in (run.identity.get("settings") or {}).items() if k in known}
    plan = run.plan or {}
    task_ids = plan.get("task_ids")
    return LiberoEvalSettings(
        **{
            **recorded,
            "task_ids": None if task_ids is None else tuple(int(t) for t in task_ids),
            "trials": int(plan.get("trials", 1)),
            "first_trial": int(plan.get("first_trial", 0)),
            "videos": True,
            "diagnostics": True,  # the chunk of every frame (and the grasp) for the bars
            "cameras": None,
            "num_shards": 1,
            "shard_id": 0,
        }
    )


def build_run_policy(run, out_dir: Path):
    """The policy ``run`` was evaluated with, from its Hydra config (relative paths resolve
    against the current directory, as when it ran); refuses changed checkpoints."""
    from omegaconf import OmegaConf, open_dict

    from rsdvla.cli import build
    from rsdvla.evaluation.libero.runner import build_policy, run_identity
    from rsdvla.evaluation.stack import load_stack

    config = run.files[0].parent / ".hydra" / "config.yaml"
    if not config.exists():
        raise FileNotFoundError(
            f"{config}: the run's Hydra config is missing, so its decoder cannot be rebuilt; "
            "replay runs written by evaluate.py"
        )
    cfg = OmegaConf.load(config)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)  # the saved value is Hydra's runtime interpolation
    stack = load_stack(cfg)
    backbone = build(cfg.backbone)
    policy = build_policy(cfg, stack, backbone)
    identity = run_identity(cfg, stack, getattr(backbone, "backbone_id", cfg.backbone._target_))
    recorded = {k: v for k, v in run.identity.items() if k != "settings"}
    if not json_equal(recorded, identity):
        from rsdvla.evaluation.libero.episodes import describe_differences

        raise ValueError(
            f"{config}: the stack loaded now differs from the one {run.path} was run with "
            f"({describe_differences(recorded, identity)}); restore the checkpoints to replay it"
        )
    return policy, identity


def json_equal(a, b) -> bool:
    import json

    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def replay_run(
    run, keys: set[EpisodeKey], out_dir: Path, policy=None, envs=None, identity=None
) -> list[dict]:
    """Rerun the episodes ``keys`` (``record_key``) of ``run`` with videos into ``out_dir``;
    returns their replayed records. ``policy``/``envs``: injected (tests), else built."""
    from rsdvla.evaluation.libero.runner import LiberoRunner

    if policy is None:
        policy, identity = build_run_policy(run, out_dir)
    elif identity is None:
        identity = {k: v for k, v in run.identity.items() if k != "settings"}
    runner = LiberoRunner(replay_settings(run), out_dir, envs).restrict_plan(keys)
    missing = keys - {spec.key for spec in runner.plan()}
    if missing:
        raise ValueError(
            f"{run.path}: episode(s) {sorted(missing)[:3]} are not in the run's plan; "
            "replay episodes of the runs compared"
        )
    runner.run(policy, identity=identity)
    return [r for r in read_episode_file(runner.episode_path) if record_key(r) in keys]


def check_reproduced(original: Sequence[dict], replayed: Sequence[dict]) -> list[str]:
    """Lines naming each replayed episode whose :data:`REPRODUCED_FIELDS` differ (empty: all
    reproduced)."""
    by_key = {record_key(r): r for r in original}
    problems = []
    for r in replayed:
        o = by_key.get(record_key(r))
        if o is None:
            problems.append(f"{record_key(r)}: no recorded episode")
            continue
        differ = [f for f in REPRODUCED_FIELDS if o.get(f) != r.get(f)]
        if differ:
            problems.append(f"{record_key(r)}: {', '.join(differ)} differ from the record")
    return problems


# ------------------------------------------------------------------------------------ video


def chunk_bars(record: dict, num_frames: int, width: int, chunk_size: int) -> np.ndarray:
    """``[num_frames, 2 * BAR_HEIGHT, width, 3]`` uint8: accepted layers (green) and divergence
    (red) of the chunk each frame's step executed (``diagnostics.chunk``, else step // chunk_size)."""
    accepted = record.get("accepted_layers") or []
    per_layer = record.get("layer_acceptance") or []
    k = max((len(row) for row in per_layer), default=0)
    divergence = (record.get("divergence") or {}).get("max_abs_norm") or []
    chunks = (record.get("diagnostics") or {}).get("chunk")
    bars = np.zeros((num_frames, 2 * BAR_HEIGHT, width, 3), np.uint8)
    for t in range(num_frames):
        c = chunks[t] if chunks and t < len(chunks) else t // max(chunk_size, 1)
        a = accepted[c] if c < len(accepted) else None
        if a is None:
            bars[t, :BAR_HEIGHT] = (90, 90, 90)
        elif k:
            bars[t, :BAR_HEIGHT, : round(width * a / k)] = (40, 200, 60)
        d = divergence[c] if c < len(divergence) else None
        if d is not None:
            bars[t, BAR_HEIGHT:, : round(width * min(1.0, float(d)))] = (220, 40, 40)
    return bars


def read_frames(path: Path) -> list[np.ndarray]:
    import imageio.v2 as imageio

    return [np.asarray(f)[..., :3] for f in imageio.mimread(path, memtest=False)]


def side_by_side(
    frames_a: Sequence[np.ndarray],
    frames_b: Sequence[np.ndarray],
    record_a: dict,
    record_b: dict,
    chunk_size: int,
) -> list[np.ndarray]:
    """A | B frames (the shorter episode holds its last frame), each with its bars underneath."""
    n = max(len(frames_a), len(frames_b))
    panels = []
    for frames, record in ((frames_a, record_a), (frames_b, record_b)):
        frames = list(frames) + [frames[-1]] * (n - len(frames))
        h, w = frames[0].shape[:2]
        bars = chunk_bars(record, n, w, chunk_size)
        panels.append([np.concatenate([f[:h, :w], bars[t]], axis=0) for t, f in enumerate(frames)])
    gap = np.full((panels[0][0].shape[0], 4, 3), 255, np.uint8)
    return [np.concatenate([a, gap, b], axis=1) for a, b in zip(*panels, strict=True)]


def video_of(folder: Path, record: dict) -> Path | None:
    from rsdvla.evaluation.libero.videos import video_path

    path = video_path(
        folder, record["suite"], int(record["task_id"]), int(record["trial"]), record["success"]
    )
    return path if path.exists() else None


def replay_discordant(
    runs: Sequence,
    result: dict,
    out: Path,
    chunk_size: int = 8,
    make: Callable | None = None,
    max_episodes: int | None = None,
) -> dict:
    """For each comparison of ``result`` (``compare_loaded``), replay its discordant episodes in
    both runs and write side-by-side videos. ``make(run) -> (policy, envs)``: injected (tests).
    Returns ``{label: {"videos": [...], "not_reproduced": [...]}}``."""
    from rsdvla.evaluation.libero.videos import video_path, write_video

    by_label = {r.label: r for r in runs}
    ref = runs[0]
    report = {}
    for comp in result["comparisons"]:
        run = by_label[comp["run"]]
        discordant = comp["discordant"][:max_episodes] if max_episodes else comp["discordant"]
        ref_keys = {(d["suite"], d["task_id"], d["reference_trial"]) for d in discordant}
        run_keys = {(d["suite"], d["task_id"], d["trial"]) for d in discordant}
        replayed = {}
        problems = []
        for r, keys in ((ref, ref_keys), (run, run_keys)):
            policy, envs = make(r) if make else (None, None)
            folder = out / "replay" / f"{r.label}_for_{run.label}"
            records = replay_run(r, keys, folder, policy, envs)
            problems += [f"{r.label} {line}" for line in check_reproduced(r.records, records)]
            replayed[r.label] = ({record_key(x): x for x in records}, folder / "videos")
        for line in problems:
            log.warning("replay did not reproduce the record: %s", line)
        videos = []
        for d in discordant:
            (ra, va), (rb, vb) = replayed[ref.label], replayed[run.label]
            rec_a = ra.get((d["suite"], d["task_id"], d["reference_trial"]))
            rec_b = rb.get((d["suite"], d["task_id"], d["trial"]))
            if rec_a is None or rec_b is None:
                continue
            path_a, path_b = video_of(va, rec_a), video_of(vb, rec_b)
            if path_a is None or path_b is None:
                continue
            frames = side_by_side(
                read_frames(path_a), read_frames(path_b), rec_a, rec_b, chunk_size
            )
            name = video_path(out / "videos", d["suite"], d["task_id"], d["trial"], True)
            target = name.with_name(
                name.name.replace("_success", f"_{_safe(ref.label)}_vs_{_safe(run.label)}")
            )
            videos.append(str(write_video(target, frames)))
        report[run.label] = {"videos": videos, "not_reproduced": problems}
    return report


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label)
