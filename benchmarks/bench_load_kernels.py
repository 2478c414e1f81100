"""Which kinds of work slow down beside a busy neighbour? Bare kernels on thread CPU time, idle and loaded.

    python benchmarks/bench_load_kernels.py                     # 10 cycles of 4 conditions, 20 rounds each
    python benchmarks/bench_load_kernels.py --cycles 20 --docs docs/benchmarks.md

A CPU-time ratio of two decoders moves with the machine's load when the two spend their time in
different kinds of work and a neighbour slows those kinds by different amounts. This benchmark
measures the slowdown of each kind alone, one torch thread, the kernels interleaved in rotating
order (``rsdvla.decoding.timing.PairedTimer``), under four conditions taken in turn within every
cycle (every neighbour starts once and sleeps while another condition is timed), so that the
machine's drift over minutes falls on every condition alike:

- ``idle``: no neighbour of this benchmark running (the cores other processes kept busy are
  measured and printed, and apart from them those its own paused neighbours used);
- ``spin``: one process spinning in a Python loop (compute, a footprint of a few KB);
- ``stream``: one process copying a 256 MB array over and over (memory bandwidth, the shared L3);
- ``oversubscribed``: two spinning processes, so that on 2 cores the timed thread shares its core
  and runs in time slices (its caches cooled by the other process between them).

Kernels (float32): ``matmul in cache`` (64x512 @ 512x512, 1 MB of weights, compute-bound),
``weights streamed`` (1x4096 @ 4096x8192, 128 MB of weights, more than the L3: memory-bound, as a
decoder step at batch 1 with OpenVLA-size weights), ``small ops`` (200 additions of 64-element
tensors: dispatch overhead). The slowdown of a kernel is its median CPU time under load over its
median idle, with a 95% bootstrap interval over whole cycles and the range of the per-cycle
slowdowns; the ``streamed / in cache`` row is the ratio of
the two, the shift a ratio of two decoders of those kinds would see. With ``--docs`` the table
replaces the ``## Which work slows under load`` section of that file.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rsdvla.decoding.machine import (
    NeighbourLoad,
    Neighbours,
    ProcessLoad,
    format_cores,
    machine_description,
)
from rsdvla.decoding.timing import (
    PairedTimer,
    bootstrap_ratio_interval,
    check_blocks,
    ratio_of_medians,
)
from rsdvla.evaluation.reports.aggregate import command_line, write_markdown_section

SECTION = "## Which work slows under load"
CONDITIONS = ("idle", "spin", "stream", "oversubscribed")


NEIGHBOURS = {"spin": ["spin"], "stream": ["stream"], "oversubscribed": ["spin", "spin"]}
"""The neighbour processes of every loaded condition (oversubscribed: two spinning processes on
a 2-core machine, so the timed thread shares its core and is time-sliced)."""


def build_kernels(scale: int = 1) -> dict:
    """``{name: zero-argument call}``; ``scale`` divides the streamed matrix (tests use a small one)."""
    torch.manual_seed(0)
    a, w = torch.randn(64, 512), torch.randn(512, 512)
    x, big = torch.randn(1, 4096 // scale), torch.randn(4096 // scale, 8192 // scale)
    tiny = [torch.randn(64) for _ in range(200)]

    def small_ops():
        total = tiny[0]
        for t in tiny[1:]:
            total = total + t
        return total

    return {
        "matmul in cache": lambda: a @ w,
        "weights streamed": lambda: x @ big,
        "small ops": small_ops,
    }


def timed_cycles(
    kernels: dict, conditions: list[str], cycles: int, rounds: int, warmup: int, settle: float = 0.3
) -> dict:
    """``cycles`` cycles; in each, every condition in turn (its neighbour woken, the others
    paused) times ``rounds`` interleaved rounds of every kernel. The machine's drift over time
    then falls on every condition alike, as a rotating order does for decoders.
    Returns ``{condition: {"cpu": {kernel: [s]}, "cycle": [label per round], "neighbour_cores":
    float | None, "own_neighbour_cores": float | None}}``: the cores all other processes kept busy
    while the condition was timed, and the cores this benchmark's neighbour processes used of
    them (the rest is whatever else ran on the machine, a virtual machine's steal time included)."""
    groups = {c: Neighbours(NEIGHBOURS[c], running=False) for c in conditions if c != "idle"}
    runs = {c: {"cpu": {k: [] for k in kernels}, "cycle": []} for c in conditions}
    meters = {c: NeighbourLoad() for c in conditions}
    with contextlib.ExitStack() as stack:
        for group in groups.values():
            stack.enter_context(group)  # every neighbour started before any timing
        pids = [pid for group in groups.values() for pid in group.pids]
        own_meters = {c: ProcessLoad(pids) for c in conditions}
        for _ in range(warmup):
            for call in kernels.values():
                call()
        for cycle in range(cycles):
            for condition in conditions:
                for c, group in groups.items():
                    group.wake() if c == condition else group.pause()
                time.sleep(settle)
                meters[condition].start()
                own_meters[condition].start()
                timer = PairedTimer(list(kernels))
                for _ in range(rounds):
                    timer.round(kernels)
                meters[condition].stop()
                own_meters[condition].stop()
                for k in kernels:
                    runs[condition]["cpu"][k] += timer.cpu[k]
                runs[condition]["cycle"] += [cycle] * rounds
    for condition in conditions:
        runs[condition]["neighbour_cores"] = meters[condition].cores()
        runs[condition]["own_neighbour_cores"] = own_meters[condition].cores()
    return runs


def slowdowns(runs: dict, names: list[str]) -> list[dict]:
    """One row per kernel (and ``streamed / in cache``): median ms per condition and, for each
    loaded condition, the slowdown (its median over idle's), a 95% bootstrap interval over whole
    cycles, and the range of the per-cycle slowdowns."""
    rows = []
    cycles = np.asarray(runs["idle"]["cycle"])
    for name in names:
        row = {
            "kernel": name,
            "ms": {c: 1e3 * statistics.median(runs[c]["cpu"][name]) for c in runs},
        }
        idle = np.asarray(runs["idle"]["cpu"][name])
        for c in runs:
            if c == "idle":
                continue
            loaded = np.asarray(runs[c]["cpu"][name])
            per_cycle = [
                ratio_of_medians(loaded[cycles == k], idle[cycles == k]) for k in np.unique(cycles)
            ]
            # ratio_of_medians(setting=idle, reference=loaded) = loaded median / idle median
            low, high = bootstrap_ratio_interval(loaded, idle, blocks=runs[c]["cycle"])
            row[c] = {
                "slowdown": ratio_of_medians(loaded, idle),
                "ci95": [low, high],
                "range": [min(per_cycle), max(per_cycle)],
            }
        rows.append(row)
    by = {r["kernel"]: r for r in rows}
    if {"weights streamed", "matmul in cache"} <= set(by):
        shift = {"kernel": "streamed / in cache", "ms": None}
        for c in runs:
            if c != "idle":
                shift[c] = {
                    "slowdown": by["weights streamed"][c]["slowdown"]
                    / by["matmul in cache"][c]["slowdown"],
                    "ci95": None,
                    "range": None,
                }
        rows.append(shift)
    return rows


def markdown(rows: list[dict], runs: dict) -> str:
    loaded = [c for c in runs if c != "idle"]
    head = (
        "| kernel | "
        + " | ".join(f"{c}: CPU ms" for c in runs)
        + " | "
        + " | ".join(f"slowdown beside {c} [95% CI] (range over cycles)" for c in loaded)
        + " |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ms = [f"{r['ms'][c]:.3f}" if r["ms"] else "-" for c in runs]
        cells = []
        for c in loaded:
            s = r[c]
            interval = f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]" if s["ci95"] else ""
            span = f" ({s['range'][0]:.2f}-{s['range'][1]:.2f})" if s["range"] else ""
            cells.append(f"{s['slowdown']:.2f}x{interval}{span}")
        lines.append(f"| {r['kernel']} | " + " | ".join(ms + cells) + " |")
    load = ", ".join(
        f"{c} {format_cores(runs[c]['neighbour_cores'])} "
        f"({format_cores(runs[c]['own_neighbour_cores'])})"
        for c in runs
    )
    return (
        "\n".join(lines)
        + "\n\nCores other processes kept busy while each was timed, over all its cycles (in "
        f"brackets, those this benchmark's neighbours used; the rest ran elsewhere, a virtual "
        f"machine's steal time included): {load}."
    )


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10, help="cycles through every condition")
    parser.add_argument("--rounds", type=int, default=20, help="rounds per condition and cycle")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--scale", type=int, default=1, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--settle", type=float, default=0.3, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--docs", type=Path, help=f"markdown file whose '{SECTION}' is replaced")
    args = parser.parse_args(argv)
    check_blocks(args.cycles, "--cycles")
    if "idle" not in args.conditions:
        parser.error("--conditions: the slowdowns are read against idle; include idle")
    conditions = ["idle", *[c for c in args.conditions if c != "idle"]]
    torch.set_num_threads(1)
    kernels = build_kernels(args.scale)
    print(f"{args.cycles} cycles of {', '.join(conditions)}, {args.rounds} rounds each", flush=True)
    runs = timed_cycles(kernels, conditions, args.cycles, args.rounds, args.warmup, args.settle)
    rows = slowdowns(runs, list(kernels))
    table = markdown(rows, runs)
    print(table)
    if args.docs:
        command = command_line("benchmarks/bench_load_kernels.py", argv)
        body = (
            f"`{command}` on {machine_description(1)}, torch {torch.__version__}, "
            f"{time.strftime('%Y-%m-%d')}: {args.cycles} cycles through the conditions, "
            f"{args.rounds} interleaved rounds per condition and cycle, thread CPU time, medians. "
            "A slowdown is the loaded median over the idle one; its 95% interval resamples whole "
            "cycles; the range is that of the per-cycle slowdowns.\n\n" + table
        )
        write_markdown_section(args.docs, SECTION, body, title="# Benchmarks")
    return rows


if __name__ == "__main__":
    main()
