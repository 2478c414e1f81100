"""Merge episode files of sharded LIBERO runs into one summary.

    python -m rsdvla.evaluation.merge outputs/evaluate/multiruns/<time>          # a sweep dir
    python -m rsdvla.evaluation.merge a/episodes.shard0of2.jsonl b/episodes.shard1of2.jsonl --out summary.json

Folders are searched recursively for ``episodes*.jsonl``. An episode recorded in several files
counts once. The summary goes to ``--out`` (default: ``summary.json`` in the first folder given,
else next to the first file) and is printed as tables.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rsdvla.evaluation.aggregate import render_summary, summarize, write_json_atomic
from rsdvla.evaluation.episodes import read_episode_file


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


def merge_episode_files(files: Sequence[Path]) -> dict:
    """Summary of all episodes in ``files`` (with ``merged_from``)."""
    records = [record for path in files for record in read_episode_file(path)]
    summary = summarize(records)
    summary["merged_from"] = [str(p) for p in files]
    return summary


def default_output(paths: Sequence[str]) -> Path:
    first = Path(paths[0])
    return (first if first.is_dir() else first.parent) / "summary.json"


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m rsdvla.evaluation.merge", description=__doc__.splitlines()[0]
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
    return summary


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f"error: {err}")
