"""Paired comparison of LIBERO runs on the same episodes.

    python -m rsdvla.evaluation.reports.compare RUN_A RUN_B [RUN_C ...] [--out DIR] [--labels a b c]

Each RUN is a run folder (``episodes*.jsonl`` with their ``run*.json``), a merged summary (a
``summary.json`` with ``merged_from``, or its folder) or a frontier point (``<work_dir>/<name>``).
Episodes are paired by (suite, task, initial state, episode seed); records written before the
episode seed was recorded pair by (suite, task, initial state, trial) and their run's ``seed``.
Runs whose protocol settings differ (suite, max_steps, seed, image size, backbone, gripper
convention) or that share no episode are refused in one line naming the field.

For every run against the first (the reference, e.g. main-only), overall and per task: the
paired counts, the success difference with a 95% paired interval and McNemar's exact p (see
``rsdvla.evaluation.reports.paired``); beside it, when both runs timed the same reference
(main-only on their own hidden states, ``rsdvla.decoding.timing``), the speed of the run's
decoder relative to the reference run's with a 95% bootstrap interval (runs that timed
different references are refused, naming both). Writes ``compare.md``, ``compare.json`` and ``compare.png``
(per-task paired differences) into ``--out`` (default: ``outputs/compare/<A>_vs_<B>...``,
outside the run folders, which merge and sweep search recursively), and
``diagnostics_<run>.png`` per run whose records carry diagnostics. ``--videos`` reruns the
discordant episodes with videos on and writes side-by-side A | B videos
(``rsdvla.evaluation.libero.replay``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rsdvla.decoding.timing import format_speed, relative_speed
from rsdvla.evaluation.libero.episodes import (
    describe_differences,
    read_episode_file,
    record_key,
    unique_records,
)
from rsdvla.evaluation.reports.aggregate import (
    reference_samples,
    reference_stage,
    speed_block,
    write_json_atomic,
)
from rsdvla.evaluation.reports.merge import common_identity, find_episode_files
from rsdvla.evaluation.reports.paired import (
    CI_METHOD,
    TEST_METHOD,
    format_paired,
    paired_comparison,
)
from rsdvla.evaluation.reports.plots import save_figure

PROTOCOL_IDENTITY_KEYS = ("settings", "backbone", "invert_gripper")
"""Run-file identity entries two compared runs must share (decoder, checkpoints, precision are
what a comparison compares)."""
IGNORED_SETTINGS = ("num_envs", "diagnostics", "videos", "cameras")
"""Settings that do not change what an episode means (parallelism, logging, rendering)."""

PairKey = tuple


@dataclass
class Run:
    """One compared run: its ``label``, ``path``, ``records`` (unique episodes), ``identity``,
    ``plan`` (suite, task ids, trials, first trial) and episode ``files``."""

    label: str
    path: Path
    records: list[dict]
    identity: dict
    plan: dict = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    @property
    def protocol(self) -> dict:
        out = {k: self.identity.get(k) for k in PROTOCOL_IDENTITY_KEYS}
        settings = dict(out.get("settings") or {})
        for key in IGNORED_SETTINGS:
            settings.pop(key, None)
        out["settings"] = settings
        return out

    @property
    def seed(self) -> int | None:
        return (self.identity.get("settings") or {}).get("seed")


def _episode_files(path: Path) -> list[Path]:
    """Episode files of a run given as a folder, a merged summary or a frontier point."""
    summary = path if path.is_file() and path.suffix == ".json" else path / "summary.json"
    if summary.is_file():
        merged = json.loads(summary.read_text()).get("merged_from")
        if merged and all(Path(p).exists() for p in merged):
            return [Path(p) for p in merged]
    if path.is_file():
        return find_episode_files([path])
    if (path / "libero").is_dir() and not list(path.glob("episodes*.jsonl")):
        path = path / "libero"  # a frontier point: <work_dir>/<name>/libero
    files = [
        f
        for f in find_episode_files([path])
        if not any(".replaced-" in part or part == "compare" for part in f.parts)
    ]
    if not files:
        raise FileNotFoundError(f"{path}: no episodes*.jsonl; pass a LIBERO run folder")
    return files


def default_label(path: Path) -> str:
    path = path.parent if path.is_file() else path
    return path.parent.name if path.name == "libero" else path.name


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read a run's episodes and identity (shards of mixed settings are refused by merge's check)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or summary; pass a LIBERO run folder")
    files = _episode_files(path)
    identity, plan, _ = common_identity(files)
    records = unique_records(r for f in files for r in read_episode_file(f))
    return Run(label or default_label(path), path, records, identity, plan, list(files))


def pair_keys(run: Run, use_episode_seed: bool) -> dict[PairKey, dict]:
    """``key -> record``: (suite, task, init state, episode seed), or (.., trial, run seed)."""
    out = {}
    for r in run.records:
        base = (str(r["suite"]), int(r["task_id"]), int(r.get("init_state_index", r["trial"])))
        key = (
            (*base, int(r["episode_seed"]))
            if use_episode_seed
            else (*base, int(r["trial"]), run.seed)
        )
        out[key] = r
    return out


def check_protocol(ref: Run, run: Run) -> None:
    """Refuse two runs whose protocol settings differ, in one line naming the field."""
    if ref.protocol != run.protocol:
        raise ValueError(
            f"{run.path} and {ref.path} were run under different protocol settings "
            f"({describe_differences(ref.protocol, run.protocol)}); compare runs of one protocol"
        )


def paired_records(ref: Run, run: Run) -> tuple[list[tuple[dict, dict]], int, int]:
    """Episode pairs ``[(ref record, run record)]`` in key order, and the unpaired counts
    (only in ``ref``, only in ``run``); refuses runs of other protocols or with no shared episode."""
    check_protocol(ref, run)
    use_seed = all("episode_seed" in r for r in (*ref.records, *run.records))
    a, b = pair_keys(ref, use_seed), pair_keys(run, use_seed)
    shared = sorted(set(a) & set(b), key=str)
    if not shared:
        raise ValueError(
            f"{run.path} and {ref.path} share no episode (same suite, task, initial state and "
            "seed); compare runs of one plan (env.task_ids, env.first_trial, trials, seed)"
        )
    return [(a[k], b[k]) for k in shared], len(set(a) - set(b)), len(set(b) - set(a))


def compare_runs(ref: Run, run: Run) -> dict:
    """Paired comparison of ``run`` against ``ref``: overall, per task, and the discordant episodes."""
    pairs, only_ref_file, only_run_file = paired_records(ref, run)
    by_task: dict[tuple[str, int], list[tuple[dict, dict]]] = defaultdict(list)
    for a, b in pairs:
        by_task[(a["suite"], int(a["task_id"]))].append((a, b))

    def stats(ps):
        return paired_comparison(
            [bool(a["success"]) for a, _ in ps], [bool(b["success"]) for _, b in ps]
        )

    try:
        speed, refusal = (
            speed_comparison([a for a, _ in pairs], [b for _, b in pairs], ref, run),
            None,
        )
    except ValueError as err:
        speed, refusal = None, str(err)
    return {
        "reference": ref.label,
        "run": run.label,
        "paired": stats(pairs),
        "speed": speed,
        "speed_refused": refusal,
        "unpaired_only_reference": only_ref_file,
        "unpaired_only_run": only_run_file,
        "tasks": [
            {"suite": s, "task_id": t, "instruction": ps[0][0].get("instruction", ""), **stats(ps)}
            for (s, t), ps in sorted(by_task.items())
        ],
        "discordant": [
            {
                "suite": a["suite"],
                "task_id": int(a["task_id"]),
                "trial": int(b["trial"]),
                "reference_trial": int(a["trial"]),
                "init_state_index": a.get("init_state_index"),
                "episode_seed": b.get("episode_seed"),
                "reference_success": bool(a["success"]),
                "run_success": bool(b["success"]),
            }
            for a, b in pairs
            if bool(a["success"]) != bool(b["success"])
        ],
    }


def speed_comparison(ref_records: list[dict], run_records: list[dict], ref: Run, run: Run) -> dict:
    """Speed of ``run``'s decoder relative to ``ref``'s on the paired episodes, per reference both
    runs timed (each run timed it on its own hidden states, call by call): ``reference ->
    {ratio, ci95, clock_name, run_speed, reference_run_speed}`` (``rsdvla.decoding.timing``);
    empty when neither run timed a reference. Runs that timed different references are refused."""
    a, b = speed_block(ref_records)["speed"], speed_block(run_records)["speed"]
    if not a or not b:
        return {}
    shared = [name for name in a if name in b]
    if not shared:
        raise ValueError(
            f"speed not compared: {ref.path} timed its decoder against {', '.join(a)} but {run.path} "
            f"against {', '.join(b)}; compare speed only between runs that timed the same reference "
            "(rerun one with the other's baseline)"
        )
    out = {}
    for name in shared:
        ref_t, ref_dec, clock_a, _ = reference_samples(ref_records, reference_stage(name))
        run_t, run_dec, clock_b, _ = reference_samples(run_records, reference_stage(name))
        clock = "cpu" if clock_a == clock_b == "cpu" else "wall"
        ratio, ci = relative_speed(ref_t[clock], ref_dec[clock], run_t[clock], run_dec[clock])
        out[name] = {
            "ratio": ratio,
            "ci95": ci,
            "clock_name": b[name]["clock_name"] if clock == "cpu" else "wall",
            "run_speed": b[name],
            "reference_run_speed": a[name],
        }
    return out


def paired_against(
    reference_dir: str | Path, run_dir: str | Path, only: set | None = None
) -> dict | None:
    """The overall paired result of ``run_dir`` against ``reference_dir`` for report tables, or
    None when either has no episode files (e.g. an offline-only point). ``only``: episode keys
    (``record_key``: suite, task, trial) of the plan to count. Refusals propagate."""
    try:
        ref, run = load_run(reference_dir), load_run(run_dir)
    except FileNotFoundError:
        return None
    if only is not None:
        for r in (ref, run):
            r.records = [rec for rec in r.records if record_key(rec) in only]
    return compare_runs(ref, run)["paired"]


# ------------------------------------------------------------------------------------ outputs


def markdown(result: dict) -> str:
    lines = [
        f"Paired comparison against `{result['reference']}`: {CI_METHOD} 95% interval of the "
        f"success difference (run - reference); p: {TEST_METHOD}.",
        "",
        "| run | task | episodes | both | only reference | only run | neither | reference | run "
        "| Δ success [95% CI] | p |",
        "|" + "---|" * 11,
    ]
    for comp in result["comparisons"]:
        rows = [("all", comp["paired"])] + [(str(t["task_id"]), t) for t in comp["tasks"]]
        for task, e in rows:
            delta, p = format_paired(e)
            lines.append(
                f"| {comp['run']} | {task} | {e['n']} | {e['both']} | {e['only_ref']} | "
                f"{e['only_run']} | {e['neither']} | {100 * e['success_ref']:.0f}% | "
                f"{100 * e['success_run']:.0f}% | {delta} | {p} |"
            )
    lines += ["", *speed_lines(result)]
    return "\n".join(lines) + "\n"


def speed_lines(result: dict) -> list[str]:
    """One line per compared run: its decoder's speed relative to the reference run's, beside the
    paired success difference (or why speed was not compared)."""
    lines = []
    for comp in result["comparisons"]:
        delta, _ = format_paired(comp["paired"])
        if comp.get("speed_refused"):
            lines.append(f"- `{comp['run']}`: {comp['speed_refused']}")
            continue
        for name, e in (comp.get("speed") or {}).items():
            low, high = e["ci95"]
            lines.append(
                f"- `{comp['run']}` vs `{comp['reference']}`: decoder speed {e['ratio']:.2f}x "
                f"[{low:.2f}, {high:.2f}] ({e['clock_name']}; each run timed against {name} on its "
                f"own hidden states: {format_speed(e['run_speed'])} and "
                f"{format_speed(e['reference_run_speed'])}), Δ success {delta}"
            )
    return lines


def plot(result: dict, path: Path) -> Path:
    """Per-task paired success differences (95% CI bars), one series per run vs the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comps = result["comparisons"]
    tasks = sorted({(t["suite"], t["task_id"]) for c in comps for t in c["tasks"]})
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tasks) + 3), 4.5))
    width = 0.8 / max(1, len(comps))
    for i, comp in enumerate(comps):
        entries = {(t["suite"], t["task_id"]): t for t in comp["tasks"]}
        xs, ys, lo, hi = [], [], [], []
        for x, key in enumerate(tasks):
            if key in entries:
                e = entries[key]
                xs.append(x - 0.4 + width * (i + 0.5))
                ys.append(100 * e["delta"])
                lo.append(100 * (e["delta"] - e["delta_ci95"][0]))
                hi.append(100 * (e["delta_ci95"][1] - e["delta"]))
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=comp["run"])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(
        range(len(tasks)), [f"{s.removeprefix('libero_')}\n{t}" for s, t in tasks], fontsize=7
    )
    ax.set_ylabel(f"success - {result['reference']} (pp, paired 95% CI)")
    ax.set_title("per-task paired success difference")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def load_runs(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> list[Run]:
    """The runs of a comparison, reference first (at least two; one label per run if given)."""
    if len(paths) < 2:
        raise ValueError("compare needs at least two runs: the reference first, then the others")
    if labels and len(labels) != len(paths):
        raise ValueError(f"--labels: {len(labels)} labels for {len(paths)} runs; give one per run")
    return [load_run(p, labels[i] if labels else None) for i, p in enumerate(paths)]


def compare(paths: Sequence[str | Path], labels: Sequence[str] | None = None) -> dict:
    """Load the runs and compare each against the first; returns the JSON-ready result."""
    return compare_loaded(load_runs(paths, labels))


def compare_loaded(runs: Sequence[Run]) -> dict:
    """Each of ``runs[1:]`` against ``runs[0]``: the JSON-ready result."""
    ref = runs[0]
    return {
        "reference": ref.label,
        "runs": [{"label": r.label, "path": str(r.path), "episodes": len(r.records)} for r in runs],
        "ci_method": CI_METHOD,
        "test": TEST_METHOD,
        "comparisons": [compare_runs(ref, run) for run in runs[1:]],
    }


def _safe_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in label)


def write_outputs(result: dict, out: Path, runs: Sequence[Run] = ()) -> dict[str, Path]:
    """``compare.md``, ``compare.json``, ``compare.png`` and, per run whose records carry them,
    ``diagnostics_<label>.png`` (``rsdvla.evaluation.reports.diagnostic_plots``)."""
    from rsdvla.evaluation.reports.diagnostic_plots import plot_diagnostics

    out.mkdir(parents=True, exist_ok=True)
    md = out / "compare.md"
    md.write_text(markdown(result))
    written = {
        "json": write_json_atomic(out / "compare.json", result),
        "md": md,
        "png": plot(result, out / "compare.png"),
    }
    for run in runs:
        png = plot_diagnostics(
            run.records, out / f"diagnostics_{_safe_name(run.label)}.png", title=run.label
        )
        if png is not None:
            written[f"diagnostics {run.label}"] = png
    return written


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m rsdvla.evaluation.reports.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", help="reference run first, then the runs to compare")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: outputs/compare/<A>_vs_<B>[_vs_...]"
    )
    parser.add_argument("--labels", nargs="+", default=None, help="one name per run")
    parser.add_argument(
        "--videos",
        action="store_true",
        help="rerun the discordant episodes with videos on and write A | B videos (needs the "
        "simulator and each run's .hydra/config.yaml)",
    )
    parser.add_argument(
        "--max-videos", type=int, default=None, help="replay at most this many per comparison"
    )
    args = parser.parse_args(argv)
    runs = load_runs(args.runs, args.labels)
    result = compare_loaded(runs)
    out = args.out or Path("outputs", "compare", "_vs_".join(_safe_name(r.label) for r in runs))
    written = write_outputs(result, out, runs)
    print(markdown(result))
    for comp in result["comparisons"]:
        if comp["unpaired_only_reference"] or comp["unpaired_only_run"]:
            print(
                f"{comp['run']}: {comp['unpaired_only_reference']} episode(s) only in "
                f"{result['reference']}, {comp['unpaired_only_run']} only in {comp['run']} (left out)",
                file=sys.stderr,
            )
    print("written: " + ", ".join(str(p) for p in written.values()))
    if args.videos:
        from rsdvla.evaluation.libero.replay import replay_discordant

        result["videos"] = replay_discordant(runs, result, out, max_episodes=args.max_videos)
        write_json_atomic(out / "compare.json", result)
        for label, entry in result["videos"].items():
            print(f"{label}: {len(entry['videos'])} side-by-side videos in {out / 'videos'}")
            for line in entry["not_reproduced"]:
                print(f"not reproduced: {line}", file=sys.stderr)
    return result


if __name__ == "__main__":
    from rsdvla.cli import one_line_errors

    one_line_errors(main)()  # a user error: one line, exit 2, as the other entry points
