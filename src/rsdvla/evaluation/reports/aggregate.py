"""Episode records -> one summary: success with Wilson intervals, latency percentiles, acceptance.

Record fields read here (written by ``rsdvla.evaluation.libero.rollout``): ``suite``, ``task_id``,
``instruction``, ``trial``, ``success``, ``steps``, ``accepted_layers`` (per chunk, null for
main-only), ``layer_acceptance`` (per chunk ``[k]``), ``latency_ms`` (``stage -> [per chunk]``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rsdvla.decoding.timing import DEFAULT_REFERENCE, RESAMPLES, format_speed, paired_speed
from rsdvla.evaluation.libero.episodes import error_keys, unique_records

STAGE_ORDER = (
    "backbone",
    "draft",
    "verify",
    "main_steps",
    "detokenize",
    "decode",
    "total",
    "baseline_decode",
)
"""Latency stages in the order tables show them (others follow alphabetically)."""


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval ``(low, high)`` of a success rate; ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def success_block(records: Sequence[dict]) -> dict:
    """``episodes``, ``successes``, ``success_rate`` and its ``success_ci95`` ``[low, high]``.

    Episodes that replay one fixed initial state (``env.allow_repeats``: trials k and k+50) are
    not independent: the interval counts distinct ``(suite, task, init_state_index)`` as its n
    (``independent_initial_states``), at the episodes' success rate; ``repeated_episodes`` says
    how many episodes repeated a state.
    """
    n = len(records)
    wins = sum(bool(r["success"]) for r in records)
    states = {
        (r.get("suite"), r.get("task_id"), r.get("init_state_index", r.get("trial")))
        for r in records
    }
    independent = len(states)
    low, high = wilson_interval(wins / n * independent if n else 0, independent)
    return {
        "episodes": n,
        "independent_initial_states": independent,
        "repeated_episodes": n - independent,
        "successes": wins,
        "success_rate": wins / n if n else None,
        "success_ci95": [low, high],
        "mean_steps": float(np.mean([r["steps"] for r in records])) if n else None,
    }


def latency_block(records: Iterable[dict]) -> dict[str, dict]:
    """``stage -> {p50, p95, mean, n}`` in milliseconds, over all chunks of all episodes."""
    samples: dict[str, list[float]] = defaultdict(list)
    for record in records:
        for stage, values in (record.get("latency_ms") or {}).items():
            samples[stage].extend(float(v) for v in values)
    order = [s for s in STAGE_ORDER if s in samples] + sorted(set(samples) - set(STAGE_ORDER))
    return {
        stage: {
            "p50": float(np.percentile(samples[stage], 50)),
            "p95": float(np.percentile(samples[stage], 95)),
            "mean": float(np.mean(samples[stage])),
            "n": len(samples[stage]),
        }
        for stage in order
        if samples[stage]
    }


def acceptance_block(records: Iterable[dict]) -> dict:
    """``mean_accepted_layers`` and ``acceptance_per_layer`` (mean over chunks), None when absent."""
    accepted: list[float] = []
    per_layer: list[list[float]] = []
    for record in records:
        accepted.extend(float(a) for a in (record.get("accepted_layers") or []) if a is not None)
        per_layer.extend(row for row in (record.get("layer_acceptance") or []) if row)
    width = max((len(row) for row in per_layer), default=0)
    layers = [float(np.mean([row[i] for row in per_layer if len(row) > i])) for i in range(width)]
    return {
        "mean_accepted_layers": float(np.mean(accepted)) if accepted else None,
        "acceptance_per_layer": layers or None,
    }


EPISODE = "episode"
"""The key of :func:`paired_chunks` holding each chunk's episode."""


def reference_name(stage: str) -> str | None:
    """The reference a latency stage times: ``baseline_decode`` -> ``main_only``,
    ``baseline_decode_m3`` -> ``main_only_m3``; None for other stages."""
    if stage == "baseline_decode":
        return "main_only"
    if stage.startswith("baseline_decode_m") and stage[len("baseline_decode_m") :].isdigit():
        return "main_only" + stage[len("baseline_decode") :]
    return None


def paired_chunks(records: Iterable[dict], stages: Sequence[str]) -> dict[str, list[float]] | None:
    """Seconds per chunk of every stage of ``stages``, over the chunks that timed them all (each
    record's per-chunk lists are aligned), and ``episode``: the index in ``records`` of every
    chunk's episode (the block a speed interval resamples); None when no chunk did."""
    out: dict[str, list] = {stage: [] for stage in [*stages, EPISODE]}
    for index, record in enumerate(records):
        latency = record.get("latency_ms") or {}
        if all(stage in latency for stage in stages):
            for stage in stages:
                out[stage].extend(float(v) / 1e3 for v in latency[stage])
            out[EPISODE].extend([index] * len(latency[stages[0]]))
    return out if out[stages[0]] else None


def _clocks(wall: dict, cpu: dict | None, stage: str, plus_backbone: bool) -> dict:
    """``{"wall": [s], "cpu": [s]}`` of ``stage`` per chunk (plus the backbone's, for a policy step)."""
    out = {}
    for clock, times, suffix in (("wall", wall, ""), ("cpu", cpu, "_cpu")):
        if times is not None:
            values = times[stage + suffix]
            if plus_backbone:
                values = [v + b for v, b in zip(values, times["backbone" + suffix], strict=True)]
            out[clock] = values
    return out


def reference_stage(reference: str) -> str:
    """The latency stage of a reference: ``main_only`` -> ``baseline_decode``,
    ``main_only_m3`` -> ``baseline_decode_m3`` (the inverse of :func:`reference_name`)."""
    return "baseline_decode" + reference[len("main_only") :]


def reference_samples(records: Sequence[dict], stage: str, plus_backbone: bool = False):
    """``(reference, decoder, clock, episodes)``: seconds per paired chunk (``{"wall": [...],
    "cpu": [...]}``; ``cpu`` only when every chunk has it) of the reference timed as ``stage`` and
    of the decoder, and each chunk's episode (:func:`paired_chunks`); None when no chunk timed it
    (or, with ``plus_backbone``, none timed the backbone: a policy step)."""
    with_backbone = paired_chunks(records, ["decode", stage, "backbone"])
    wall = with_backbone or (None if plus_backbone else paired_chunks(records, ["decode", stage]))
    if wall is None:
        return None
    suffixed = ["decode_cpu", f"{stage}_cpu", *(["backbone_cpu"] if with_backbone else [])]
    cpu = paired_chunks(records, suffixed)
    if cpu is None or len(cpu["decode_cpu"]) != len(wall["decode"]):
        cpu = None  # not every chunk has CPU times (a GPU run, or older records): wall
    clock = "wall" if cpu is None else "cpu"
    return (
        _clocks(wall, cpu, stage, plus_backbone),
        _clocks(wall, cpu, "decode", plus_backbone),
        clock,
        wall[EPISODE],
    )


def speed_block(records: Sequence[dict], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """``speed`` (decoder call vs every reference the policy timed on the same hidden states) and
    ``end_to_end`` (policy step: backbone + decode vs backbone + the reference's decode), each
    ``reference -> rsdvla.decoding.timing.paired_speed`` entry over the paired chunks, its
    interval resampling whole episodes (chunks of one episode share its stretch of time; fewer
    than ``MIN_BLOCKS`` episodes: chunks); on the CPU clock when the records carry ``*_cpu``
    times (a CPU run), else on wall time."""
    stages = {stage for r in records for stage in (r.get("latency_ms") or {})}
    speed, end_to_end = {}, {}
    for stage in sorted(stages):
        ref = reference_name(stage)
        if ref is None:
            continue
        for out, backbone in ((speed, False), (end_to_end, True)):
            samples = reference_samples(records, stage, backbone)
            if samples is not None:
                reference, decoder, clock, episodes = samples
                out[ref] = paired_speed(
                    reference, decoder, ref, clock, resamples=resamples, seed=seed, blocks=episodes
                )
    return {"speed": speed, "end_to_end": end_to_end}


def _task_entry(records: Sequence[dict]) -> dict:
    first = records[0]
    return {
        "suite": first["suite"],
        "task_id": int(first["task_id"]),
        "instruction": first.get("instruction", ""),
        **success_block(records),
    }


def summarize(records: Iterable[dict]) -> dict:
    """Episode records (duplicates counted once) -> the summary dict written to ``summary.json``.

    Top level: ``success_rate``, ``success_ci95``, ``episodes``, ``speedup`` (with ``speedup_ci95``
    and ``speedup_clock``; ``speed`` and ``end_to_end`` per reference, :func:`speed_block`), ``latency_p50_ms`` /
    ``latency_p95_ms`` (decoder), ``main_only_latency_p50_ms``, ``num_chunks``,
    ``mean_accepted_layers``, ``acceptance_per_layer``, ``latency_ms`` (every stage), ``errors``
    (episodes whose only record is an error record: never counted as failures); then ``suites``
    (``suite -> success block``) and ``tasks`` (one entry per (suite, task)).
    """
    records = list(records)
    errors = len(error_keys(records))
    records = unique_records(records)
    by_task: dict[tuple[str, int], list[dict]] = defaultdict(list)
    by_suite: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_task[(record["suite"], int(record["task_id"]))].append(record)
        by_suite[record["suite"]].append(record)
    latency = latency_block(records)
    speed = speed_block(records)
    main = speed["speed"].get(DEFAULT_REFERENCE)

    def stat(stage: str, key: str = "p50") -> float | None:
        return latency[stage][key] if stage in latency else None

    return {
        **success_block(records),
        "errors": errors,  # episodes that could not be run (simulator crash): not in `episodes`
        "speedup": main["ratio"] if main else None,  # decoder vs full main-only, paired chunks
        "speedup_ci95": main["ci95"] if main else None,
        "speedup_clock": main["clock_name"] if main else None,
        **speed,
        "latency_p50_ms": stat("decode"),  # decoder only, as the offline evaluation reports it
        "latency_p95_ms": stat("decode", "p95"),
        "main_only_latency_p50_ms": stat("baseline_decode"),
        "num_chunks": stat("decode", "n") or 0,
        **acceptance_block(records),
        "latency_ms": latency,
        "suites": {suite: success_block(rs) for suite, rs in sorted(by_suite.items())},
        "tasks": [_task_entry(by_task[key]) for key in sorted(by_task)],
    }


def write_json_atomic(path: str | os.PathLike, payload: dict) -> Path:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # full disk, read-only folder: the old file (if any) stays intact
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise ValueError(
            f"{path}: cannot write ({err.strerror}); free space or fix permissions and rerun"
        ) from None
    return path


def command_line(script: str, argv: Sequence[str] | None = None) -> str:
    """``python <script> <args>`` as a shell would take it back (``argv``: None reads sys.argv):
    the command printed beside a figure in docs/."""
    return f"python {script} {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()


def write_markdown_section(path: str | os.PathLike, heading: str, body: str, title: str) -> Path:
    """Replace the section under ``heading`` (e.g. ``"## Frontier"``, up to the next ``## ``) of the
    markdown file ``path`` by ``body``, or append it; other sections stay as they are. A missing
    file starts with ``title``. Written to a temp file, then renamed over ``path``."""
    path = Path(path)
    lines = (path.read_text() if path.exists() else title).splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
    except StopIteration:
        lines.append("")
        start = end = len(lines)
    new = lines[:start] + [heading, "", *body.strip().splitlines(), ""] + lines[end:]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(new).rstrip("\n") + "\n")
    os.replace(tmp, path)
    return path


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_summary(summary: dict, console=None) -> None:
    """Print the summary as rich tables: success per task/suite, latency per stage, acceptance."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    tasks = Table(title="LIBERO success (95% Wilson CI)")
    for column in ("suite", "task", "instruction", "episodes", "success", "95% CI"):
        tasks.add_column(column)
    rows = [
        *summary["tasks"],
        *(
            {"suite": s, "task_id": "all", "instruction": "", **b}
            for s, b in summary["suites"].items()
        ),
    ]
    for row in rows:
        low, high = row["success_ci95"]
        tasks.add_row(
            row["suite"],
            str(row["task_id"]),
            row["instruction"][:48],
            str(row["episodes"]),
            _pct(row["success_rate"]),
            f"{_pct(low)}-{_pct(high)}",
        )
    console.print(tasks)
    latency = Table(title="Latency per chunk (ms)")
    for column in ("stage", "p50", "p95", "mean", "chunks"):
        latency.add_column(column)
    for stage, block in summary["latency_ms"].items():
        latency.add_row(
            stage,
            f"{block['p50']:.2f}",
            f"{block['p95']:.2f}",
            f"{block['mean']:.2f}",
            str(block["n"]),
        )
    console.print(latency)
    accepted = summary.get("mean_accepted_layers")
    per_layer = summary.get("acceptance_per_layer") or []
    console.print(
        f"episodes {summary['episodes']}  success {_pct(summary['success_rate'])}  "
        f"mean accepted layers {'-' if accepted is None else f'{accepted:.2f}'}  "
        f"acceptance per layer [{', '.join(f'{a:.2f}' for a in per_layer)}]"
    )
    for ref, entry in (summary.get("speed") or {}).items():
        step = (summary.get("end_to_end") or {}).get(ref)
        console.print(f"decoder speed {format_speed(entry)}; policy step {format_speed(step)}")
