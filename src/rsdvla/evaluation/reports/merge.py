"""Merge episode files of sharded LIBERO runs into one summary.

    python -m rsdvla.evaluation.reports.merge outputs/evaluate/multiruns/<time>          # a sweep dir
    python -m rsdvla.evaluation.reports.merge a/episodes.shard0of2.jsonl b/episodes.shard1of2.jsonl --out summary.json

Folders are searched recursively for ``episodes*.jsonl``. An episode recorded in several files
counts once. Each episode file's run file (``run.shard{i}of{N}.json`` beside it) says what it was
run with: files of different settings are refused, and the summary says which shards and how
many planned episodes are missing (``complete`` is true only when every planned episode is
there). The summary goes to ``--out`` (default: ``summary.json`` in the first folder given,
else next to the first file) and is printed as tables.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rsdvla.evaluation.libero.episodes import (
    describe_differences,
    is_error,
    plan_episodes,
    read_episode_file,
    read_run_file,
    record_key,
    run_file_for,
)
from rsdvla.evaluation.reports.aggregate import render_summary, summarize, write_json_atomic


def find_episode_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Episode files named by ``paths`` (files as given, folders searched recursively), sorted, unique."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(path.rglob("episodes*.jsonl")))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(
                f"{path}: no such episode file or folder; pass run folders or episodes*.jsonl files"
            )
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise FileNotFoundError(
            f"no episodes*.jsonl under {', '.join(map(str, paths))}; did the shards run there?"
        )
    return unique


def common_identity(files: Sequence[Path]) -> tuple[dict, dict, set[int]]:
    """The one identity (settings) and plan of all ``files``, and the shard ids present; refuses a mix."""
    first, identity, plan, shards = None, None, None, set()
    for path in files:
        run = read_run_file(run_file_for(path))
        if run is None:
            raise ValueError(
                f"{path}: no {run_file_for(path).name} beside it records its settings, so it cannot be checked "
                "against the other shards; rerun that shard with evaluate.py into a new hydra.run.dir"
            )
        this_plan = {k: v for k, v in run["plan"].items() if k != "shard_id"}
        if identity is None:
            first, identity, plan = path, run["identity"], this_plan
        elif run["identity"] != identity or this_plan != plan:
            raise ValueError(
                f"{path} and {first} were run with different settings "
                f"({describe_differences({**identity, 'plan': plan}, {**run['identity'], 'plan': this_plan})}); "
                "merge only the shards of one evaluation"
            )
        shards.add(int(run["plan"].get("shard_id", 0)))
    return identity, plan, shards


def merge_episode_files(files: Sequence[Path], only: set | None = None) -> dict:
    """Summary of all episodes in ``files`` (with ``merged_from``, ``complete``, ``missing_shards``,
    ``missing_episodes``); raises ``ValueError`` on mixed settings.

    ``only``: episode keys (``record_key``) of a narrower plan to summarize, e.g. the trials a
    frontier point asks for when the files also hold the episodes of an earlier, larger plan
    (those stay on disk and out of the numbers); ``complete`` then refers to ``only``.
    """
    identity, plan, shards = common_identity(files)
    planned = {
        spec.key
        for spec in plan_episodes(
            plan["suite"], plan["task_ids"], plan["trials"], plan["first_trial"]
        )
    }
    records = [record for path in files for record in read_episode_file(path)]
    if only is not None:
        planned = set(only)
        records = [r for r in records if record_key(r) in planned]
    # Episodes of an earlier plan of the same settings (a resume with other task ids, trials or
    # first trial: the run file records the latest plan) are valid but not this plan's: left out.
    outside = [r for r in records if record_key(r) not in planned]
    records = [r for r in records if record_key(r) in planned]
    summary = summarize(records)
    summary["episodes_outside_plan"] = len(outside)
    present = {record_key(r) for r in records if not is_error(r)}  # an error record is missing
    num_shards = int(plan.get("num_shards", 1))
    summary["planned_episodes"] = len(planned)
    summary["missing_episodes"] = len(planned - present)
    summary["missing_shards"] = sorted(set(range(num_shards)) - shards)
    summary["complete"] = not (planned - present)
    summary["settings"] = {**identity["settings"], **plan}
    summary["merged_from"] = [str(p) for p in files]
    return summary


def default_output(paths: Sequence[str]) -> Path:
    first = Path(paths[0])
    return (first if first.is_dir() else first.parent) / "summary.json"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m rsdvla.evaluation.reports.merge", description=__doc__.splitlines()[0]
    )
    parser.add_argument("paths", nargs="+", help="run/sweep folders or episodes*.jsonl files")
    parser.add_argument(
        "--out", default=None, help="summary path (default: <first folder>/summary.json)"
    )
    args = parser.parse_args(argv)
    files = find_episode_files(args.paths)
    summary = merge_episode_files(files)
    out = write_json_atomic(args.out or default_output(args.paths), summary)
    render_summary(summary)
    print(f"{len(files)} episode files, {summary['episodes']} episodes -> {out}")
    if not summary["complete"]:
        print(
            f"incomplete: {summary['missing_episodes']} of {summary['planned_episodes']} planned episodes missing"
            + (
                f"; shard(s) {summary['missing_shards']} of {summary['settings']['num_shards']} have no file"
                if summary["missing_shards"]
                else ""
            )
            + "; run them (same command, their eval.shard_id) and merge again",
            file=sys.stderr,
        )
    return summary


if __name__ == "__main__":
    from rsdvla.cli import one_line_errors

    one_line_errors(main)()  # a user error: one line, exit 2, as the other entry points
