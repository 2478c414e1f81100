"""The episode plan (which (task, trial) pairs, split over shards) and the JSONL episode file.

An episode file holds one JSON object per finished episode, appended, flushed and fsync'd as
each episode ends. A rerun reads it back and skips what is done; a half-written last line (the
process was killed mid-write) is cut off, so that episode simply runs again.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EpisodeKey = tuple[str, int, int]
"""``(suite, task_id, trial)``: what identifies an episode across reruns and shards."""


@dataclass(frozen=True, order=True)
class EpisodeSpec:
    """One episode to run: task ``task_id`` of ``suite`` from fixed initial state ``trial`` (mod N)."""

    suite: str
    task_id: int
    trial: int

    @property
    def key(self) -> EpisodeKey:
        return (self.suite, self.task_id, self.trial)


def record_key(record: dict) -> EpisodeKey:
    """The :data:`EpisodeKey` of an episode record."""
    return (str(record["suite"]), int(record["task_id"]), int(record["trial"]))


def plan_episodes(
    suite: str, task_ids: Sequence[int], trials: int, first_trial: int = 0
) -> list[EpisodeSpec]:
    """All episodes of an evaluation, task-major: ``[(t0, f), (t0, f+1), ..., (t1, f), ...]``.

    ``first_trial`` f > 0 starts from a later fixed initial state, e.g. to evaluate on initial
    states that the training demonstrations did not start from.
    """
    if trials < 1 or first_trial < 0:
        raise ValueError(
            f"trials={trials}, env.first_trial={first_trial}: need trials >= 1 and first_trial >= 0"
        )
    return [
        EpisodeSpec(suite, int(t), trial)
        for t in task_ids
        for trial in range(first_trial, first_trial + trials)
    ]


def shard_episodes(
    specs: Sequence[EpisodeSpec], num_shards: int, shard_id: int
) -> list[EpisodeSpec]:
    """Shard ``shard_id`` of ``num_shards``: a contiguous block of the plan (fewest env creations).

    Deterministic; the shards are disjoint, cover the plan and differ in size by at most one.
    """
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(
            f"eval.shard_id={shard_id}, eval.num_shards={num_shards}: need num_shards >= 1 and "
            f"0 <= shard_id < num_shards; fix: eval.shard_id=0..{max(num_shards, 1) - 1}"
        )
    n = len(specs)
    return list(specs[shard_id * n // num_shards : (shard_id + 1) * n // num_shards])


def episode_file_name(num_shards: int = 1, shard_id: int = 0) -> str:
    """``episodes.jsonl``, or ``episodes.shard{i}of{N}.jsonl`` when sharded."""
    return "episodes.jsonl" if num_shards == 1 else f"episodes.shard{shard_id}of{num_shards}.jsonl"


def summary_file_name(num_shards: int = 1, shard_id: int = 0) -> str:
    """``summary.json``, or ``summary.shard{i}of{N}.json`` when sharded (merge writes ``summary.json``)."""
    return "summary.json" if num_shards == 1 else f"summary.shard{shard_id}of{num_shards}.json"


def run_file_name(num_shards: int = 1, shard_id: int = 0) -> str:
    """``run.json``, or ``run.shard{i}of{N}.json``: the settings an episode file was run with."""
    return "run.json" if num_shards == 1 else f"run.shard{shard_id}of{num_shards}.json"


def run_file_for(episode_path: str | os.PathLike) -> Path:
    """The run file beside an episode file (``episodes.shard0of2.jsonl`` -> ``run.shard0of2.json``)."""
    path = Path(episode_path)
    return path.with_name("run" + path.name.removeprefix("episodes").removesuffix("l"))


def read_run_file(path: str | os.PathLike) -> dict | None:
    """``{"identity": {...}, "num_shards", "shard_id"}`` or None when absent."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err.msg}); it records a run's settings: restore it, or start "
            "the evaluation in a new hydra.run.dir"
        ) from None


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts -> ``{"a.b": leaf}`` (lists are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def describe_differences(recorded: dict, current: dict, limit: int = 3) -> str:
    """``"decoder.acceptance.threshold: 0.7 vs 0.9, settings.max_steps: 280 vs 100"``."""
    a, b = flatten(recorded), flatten(current)
    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, "<absent>") != b.get(k, "<absent>")]
    parts = [f"{k}: {a.get(k, '<absent>')} vs {b.get(k, '<absent>')}" for k in keys[:limit]]
    return ", ".join(parts) + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def read_episode_file(path: str | os.PathLike, repair: bool = False) -> list[dict]:
    """Records of an episode file (missing file: none).

    A last line without its newline is a write cut short: ignored, and with ``repair`` cut off
    the file so later appends start on a clean line. A corrupt line elsewhere is skipped with a
    warning naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        log.warning(
            "%s: dropping a half-written last line (%d bytes); that episode reruns",
            path,
            len(data) - len(complete),
        )
        if repair:
            with open(path, "r+b") as f:
                f.truncate(len(complete))
                f.flush()
                os.fsync(f.fileno())
    records = []
    for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            record_key(record)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("%s:%d: not an episode record, skipped", path, number)
            continue
        records.append(record)
    return records


def is_error(record: dict) -> bool:
    """An error record (``"error": "..."``): the episode could not be run (its simulator worker
    died twice); never a policy failure, left out of success counts, retried by a rerun."""
    return bool(record.get("error"))


def error_keys(records: Iterable[dict]) -> set[EpisodeKey]:
    """Keys of episodes with an error record and no finished record."""
    records = list(records)
    finished = {record_key(r) for r in records if not is_error(r)}
    return {record_key(r) for r in records if is_error(r)} - finished


def unique_records(records: Iterable[dict]) -> list[dict]:
    """Keep the first finished record of each episode key (a resumed or overlapping run never
    counts twice); error records are left out (see :func:`is_error`)."""
    seen: set[EpisodeKey] = set()
    out = []
    for record in records:
        if is_error(record):
            continue
        key = record_key(record)
        if key in seen:
            log.warning("episode %s recorded twice; counting it once", key)
            continue
        seen.add(key)
        out.append(record)
    return out


class EpisodeFile:
    """Append-only JSONL episode log of one run (or shard), safe against kills.

    ``records()``: what is already there (repaired on open); ``append(record)``: one line,
    flushed and fsync'd before returning.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        records = read_episode_file(self.path, repair=True)
        self._records = unique_records(records) + [r for r in records if is_error(r)]

    def records(self, include_errors: bool = False) -> list[dict]:
        """Finished episodes (and, with ``include_errors``, the error records after them)."""
        return [r for r in self._records if include_errors or not is_error(r)]

    def finished_keys(self) -> set[EpisodeKey]:
        """Keys of finished episodes (an episode with only an error record runs again)."""
        return {record_key(r) for r in self.records()}

    def error_keys(self) -> set[EpisodeKey]:
        """Keys of episodes with an error record and no finished one."""
        return error_keys(self._records)

    def append(self, record: dict) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except (
            OSError
        ) as err:  # a full disk or a read-only folder: name the file, keep what is there
            raise ValueError(
                f"{self.path}: cannot append the episode ({err.strerror}); free space or fix permissions and "
                "rerun the same command (finished episodes are kept; a half-written line is dropped)"
            ) from None
        self._records.append(record)
