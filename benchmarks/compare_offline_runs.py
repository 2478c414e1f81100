"""Do two runs of the offline frontier agree? Every setting both ran, against every reference both timed.

    python benchmarks/compare_offline_runs.py outputs/frontier outputs/frontier_load \
        --labels idle "beside LIBERO" --docs docs/benchmarks.md

Each argument is a frontier work dir (``frontier.work_dir``); a setting's offline point is
``<dir>/<setting>/offline/summary.json``. Two points are comparable only when they have the same
identity (overrides, checkpoint hashes, store, offline overrides); a pair that differs is refused,
since its speeds would measure different things. Settings agree when their 95% intervals on the
CPU clock overlap (``rsdvla.decoding.timing.intervals_overlap``); the wall-clock ratios are
printed beside. Exits 1 when some setting disagrees. With ``--docs`` the table replaces the
``## Two offline frontier runs`` section of that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rsdvla.decoding.machine import format_cores
from rsdvla.decoding.timing import format_ratio, intervals_overlap
from rsdvla.evaluation.reports.aggregate import command_line, write_markdown_section

SECTION = "## Two offline frontier runs"


def offline_points(work_dir: Path) -> dict[str, dict]:
    """``{setting: offline summary}`` of every finished offline point under ``work_dir``."""
    if not work_dir.is_dir():
        raise FileNotFoundError(f"{work_dir}: no such frontier work dir; pass frontier.work_dir")
    return {
        path.parent.parent.name: json.loads(path.read_text())
        for path in sorted(work_dir.glob("*/offline/summary.json"))
    }


def compare(a: dict[str, dict], b: dict[str, dict]) -> list[dict]:
    """One row per (setting, reference) timed in both runs, in ``a``'s order."""
    rows = []
    for name, first in a.items():
        second = b.get(name)
        if second is None:
            continue
        if first.get("identity") != second.get("identity"):
            raise ValueError(
                f"{name}: the two runs' offline points have different identities (overrides, "
                "checkpoints or store); compare runs of the same stack and settings"
            )
        for ref, x in first["speed"].items():
            y = second["speed"].get(ref)
            if y is None:
                continue
            rows.append(
                dict(
                    setting=name,
                    reference=ref,
                    a=x,
                    b=y,
                    agree=intervals_overlap(x["ci95"], y["ci95"]),
                )
            )
    return rows


def interval_units(rows: list[dict]) -> str:
    """What the intervals of both runs resample: ``over 10 blocks of 400 calls`` and the like."""
    units = sorted(
        {
            f"over {e['blocks']} blocks of {e['calls']} calls"
            if e.get("interval_unit") == "block"
            else f"over {e['calls']} calls"
            for r in rows
            for e in (r["a"], r["b"])
        }
    )
    return "; ".join(units)


def cores(entry: dict) -> str:
    """The cores other processes kept busy while ``entry`` was timed, or ``?`` (not recorded)."""
    return format_cores(entry.get("neighbour_cores"))


def load_summary(rows: list[dict], labels: tuple[str, str]) -> str:
    """``neighbour load (cores other processes kept busy, median over points): idle 0.02, ...``."""
    parts = []
    for key, label in zip(("a", "b"), labels, strict=True):
        values = sorted(
            r[key]["neighbour_cores"] for r in rows if r[key].get("neighbour_cores") is not None
        )
        parts.append(
            f"{label} {values[len(values) // 2]:.2f}" if values else f"{label} not recorded"
        )
    return "neighbour load (cores other processes kept busy, median over points): " + ", ".join(
        parts
    )


def markdown(rows: list[dict], labels: tuple[str, str]) -> str:
    a, b = labels
    lines = [
        f"| setting | reference | {a}: CPU-time speedup [95% CI] | {b}: CPU-time speedup [95% CI] "
        f"| intervals overlap | {a}: wall | {b}: wall | neighbour cores ({a} / {b}) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['setting']} | {r['reference']} | {format_ratio(r['a'])} | {format_ratio(r['b'])} "
            f"| {'yes' if r['agree'] else 'NO'} | {r['a']['wall_ratio']:.2f}x | {r['b']['wall_ratio']:.2f}x "
            f"| {cores(r['a'])} / {cores(r['b'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> bool:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--labels", nargs=2, default=["first run", "second run"])
    parser.add_argument("--docs", type=Path, help=f"markdown file whose '{SECTION}' is replaced")
    args = parser.parse_args(argv)
    rows = compare(offline_points(args.first), offline_points(args.second))
    if not rows:
        raise SystemExit(f"{args.first} and {args.second} share no timed offline point")
    agree = sum(r["agree"] for r in rows)
    table = markdown(rows, tuple(args.labels))
    print(table)
    load = load_summary(rows, tuple(args.labels))
    print(f"{agree} of {len(rows)} (setting, reference) pairs agree within their intervals; {load}")
    if args.docs:
        command = command_line("benchmarks/compare_offline_runs.py", argv)
        body = (
            f"`{command}`: the offline points of two frontier runs of the same settings and "
            f"checkpoints ({args.first}: {args.labels[0]}; {args.second}: {args.labels[1]}), "
            "each speed against the references timed beside it in its own run; thread CPU time, "
            f"95% bootstrap intervals {interval_units(rows)}. **{agree} of {len(rows)}** pairs agree "
            f"within their intervals; {load}.\n\n" + table
        )
        write_markdown_section(args.docs, SECTION, body, title="# Benchmarks")
    return agree == len(rows)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
