"""Collect a Hydra multirun of evaluations into one CSV and one plot.

    python -m rsdvla.evaluation.reports.sweep outputs/evaluate/multiruns/<time> [--csv out.csv] [--png out.png]

Reads every ``<job>/summary.json`` under the multirun directory and the job's
``<job>/.hydra/overrides.yaml``; writes ``sweep.csv`` (a row per job: job, overrides, key
metrics) and ``sweep.png`` (speedup vs action error, one labelled point per setting; a second
panel of success rate vs speedup when summaries carry ``success_rate``) into that directory.
LIBERO jobs are also compared with the main-only job (``decoder=main_only``, or ``--reference
JOB``) on their shared episodes: ``paired_delta_vs_main_only`` with Newcombe's paired 95%
interval (``paired_ci_low``/``high``) and McNemar's exact p (``paired_p_mcnemar``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import yaml

from rsdvla.decoding.timing import DEFAULT_REFERENCE, speed_columns
from rsdvla.evaluation.reports.plots import save_figure

METRICS = (
    "speedup",  # with speedup_ci_low / _ci_high / _reference / _clock (speed_columns)
    "action_mse",
    "main_only_action_mse",
    "action_mse_vs_main_only",
    "token_agreement",
    "chunk_agreement",
    "mean_accepted_layers",
    "success_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "main_only_latency_p50_ms",
    "num_chunks",
)


def read_overrides(job_dir: Path) -> dict[str, str]:
    """``key=value`` lines of ``.hydra/overrides.yaml`` -> ``{key: value}`` (empty if absent)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    items = yaml.safe_load(path.read_text()) or []
    out = {}
    for item in items:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def scalar(value):
    return value if isinstance(value, (int, float, str)) or value is None else json.dumps(value)


def collect(multirun_dir: Path) -> list[dict]:
    """One row per ``summary.json`` under ``multirun_dir``: ``job``, override values, metrics."""
    multirun_dir = Path(multirun_dir)
    summaries = sorted(multirun_dir.rglob("summary.json"), key=lambda p: str(p))
    if not summaries:
        raise FileNotFoundError(
            f"{multirun_dir}: no */summary.json found; pass the multirun directory of `python evaluate.py -m ...`"
        )
    rows = []
    for path in summaries:
        job_dir = path.parent
        summary = json.loads(path.read_text())
        row = {"job": str(job_dir.relative_to(multirun_dir)) or "."}
        row.update(read_overrides(job_dir))
        row.update({m: scalar(summary.get(m)) for m in METRICS if m in summary})
        speed = (summary.get("speed") or {}).get(summary.get("speed_reference", DEFAULT_REFERENCE))
        if speed:  # the speedup's interval, reference and clock (rsdvla.decoding.timing)
            row.update(speed_columns("speedup", speed))
        rows.append(row)
    return rows


PAIRED_COLUMNS = (
    "paired_episodes",
    "paired_delta_vs_main_only",
    "paired_ci_low",
    "paired_ci_high",
    "paired_p_mcnemar",
)


def add_paired(rows: list[dict], multirun_dir: Path, reference: str | None = None) -> str | None:
    """Add :data:`PAIRED_COLUMNS` to the LIBERO jobs: each against the reference job (``reference``,
    else the first with ``decoder=main_only``) on their shared episodes. Returns the reference
    job, or None when there is none (then nothing is added)."""
    from rsdvla.evaluation.reports.compare import paired_against

    if reference is None:
        reference = next((r["job"] for r in rows if r.get("decoder") == "main_only"), None)
    elif reference not in {r["job"] for r in rows}:
        raise ValueError(
            f"--reference {reference}: no such job under {multirun_dir}; "
            f"choose one of {', '.join(r['job'] for r in rows)}"
        )
    if reference is None:
        return None
    for row in rows:
        if row["job"] == reference:
            continue
        paired = paired_against(multirun_dir / reference, multirun_dir / row["job"])
        if paired is not None:
            row.update(
                dict(
                    zip(
                        PAIRED_COLUMNS,
                        (paired["n"], paired["delta"], *paired["delta_ci95"], paired["p_mcnemar"]),
                        strict=True,
                    )
                )
            )
    return reference


def write_csv(rows: list[dict], path: Path) -> None:
    columns = ["job"]
    for row in rows:
        columns += [c for c in row if c not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def setting_labels(rows: list[dict]) -> list[str]:
    """Label each row by the overrides that differ across jobs (all overrides if none differ)."""
    skip = ("job", *METRICS, *PAIRED_COLUMNS, *speed_columns("speedup", None))
    keys = [k for k in rows[0] if k not in skip]
    keys += [k for row in rows for k in row if k not in keys and k not in skip]
    varying = [k for k in keys if len({str(r.get(k)) for r in rows}) > 1] or keys
    return [" ".join(f"{k}={r[k]}" for k in varying if k in r) or r["job"] for r in rows]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def plot(rows: list[dict], path: Path) -> dict[str, list[tuple[float, float, str]]]:
    """Write the PNG; returns what each panel shows: ``metric -> [(speedup, value, label)]``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = setting_labels(rows)
    candidates = [
        ("action_mse", "action MSE vs ground truth (normalized)"),
        ("success_rate", "success rate"),
    ]
    panels = [(m, y) for m, y in candidates if any(_finite(r.get(m)) for r in rows)]
    if not panels:
        raise ValueError(
            "no summary carries `action_mse` or `success_rate`; nothing to plot against speedup"
        )
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.8), squeeze=False)
    shown: dict[str, list[tuple[float, float, str]]] = {}
    for ax, (metric, ylabel) in zip(axes[0], panels, strict=True):
        shown[metric] = []
        for row, label in zip(rows, labels, strict=True):
            x, y = row.get("speedup"), row.get(metric)
            if _finite(x) and _finite(y):
                shown[metric].append((x, y, label))
                ax.scatter(x, y)
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("speedup vs main_only (median decoder time)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    return shown


def main(argv=None) -> tuple[Path, Path]:
    parser = argparse.ArgumentParser(
        description="Collect a Hydra multirun of evaluations into a CSV and a plot."
    )
    parser.add_argument("multirun_dir", type=Path)
    parser.add_argument("--csv", type=Path, default=None, help="default: <multirun_dir>/sweep.csv")
    parser.add_argument("--png", type=Path, default=None, help="default: <multirun_dir>/sweep.png")
    parser.add_argument(
        "--reference",
        default=None,
        help="job the LIBERO jobs are paired against (default: the decoder=main_only job)",
    )
    args = parser.parse_args(argv)
    csv_path = args.csv or args.multirun_dir / "sweep.csv"
    png_path = args.png or args.multirun_dir / "sweep.png"
    try:
        rows = collect(args.multirun_dir)
        add_paired(rows, args.multirun_dir, args.reference)
        write_csv(rows, csv_path)
        plot(rows, png_path)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    print(f"{len(rows)} jobs -> {csv_path}, {png_path}")
    return csv_path, png_path


if __name__ == "__main__":
    from rsdvla.cli import one_line_errors

    one_line_errors(main)()  # a user error: one line, exit 2, as the other entry points
