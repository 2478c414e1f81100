"""The quickstart's closing table: one row per decoder, from the stages' ``summary.json`` files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

from rsdvla.decoding.timing import format_columns, speed_columns
from rsdvla.evaluation.reports.paired import format_paired

log = logging.getLogger(__name__)


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def _fmt(value, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


REFERENCE = "main_only"
"""The decoder every other is compared against, paired on the same LIBERO episodes."""


def paired_vs_reference(work: Path, name: str, decoders: list[str]) -> dict | None:
    """``name``'s LIBERO episodes against main-only's, paired (None for main-only itself, when
    either has no episodes, or when the pairing is refused: logged)."""
    from rsdvla.evaluation.reports.compare import paired_against

    if name == REFERENCE or REFERENCE not in decoders:
        return None
    try:
        return paired_against(work / f"libero_{REFERENCE}", work / f"libero_{name}")
    except ValueError as err:
        log.warning("paired comparison of %s with %s left out: %s", name, REFERENCE, err)
        return None


def collect_rows(work: Path, decoders: list[str]) -> list[dict]:
    """Merge the offline and LIBERO summaries of each decoder into one flat row; ``paired``:
    its LIBERO episodes against main-only's (``rsdvla.evaluation.reports.paired.paired_comparison``)."""
    rows = []
    for name in decoders:
        offline, libero = (
            _load(work / f"offline_{name}" / "summary.json"),
            _load(work / f"libero_{name}" / "summary.json"),
        )
        # acceptance from the LIBERO rollouts (batch 1, the deployed setting); offline as a fallback
        source = libero if libero.get("acceptance_per_layer") else offline
        rows.append(
            {
                "decoder": name,
                "success_rate": libero.get("success_rate"),
                "success_ci95": libero.get("success_ci95"),
                "episodes": libero.get("episodes"),
                **speed_columns("libero_speedup", (libero.get("speed") or {}).get(REFERENCE)),
                **speed_columns("offline_speedup", (offline.get("speed") or {}).get(REFERENCE)),
                "mean_accepted_layers": source.get("mean_accepted_layers"),
                "acceptance_per_layer": source.get("acceptance_per_layer"),
                "action_mse": offline.get("action_mse"),
                "action_mse_vs_main_only": offline.get("action_mse_vs_main_only"),
                "decoder_p50_ms": offline.get("latency_p50_ms"),
                "paired": paired_vs_reference(work, name, decoders),
            }
        )
    return rows


def render(rows: list[dict], timings: dict[str, float]) -> Table:
    table = Table(
        title="rsdvla quickstart: LIBERO success (simulator's own check), decoder speed, acceptance"
    )
    for col in (
        "decoder",
        "success [95% CI]",
        "episodes",
        "speedup vs main_only [95% CI] (LIBERO)",
        "speedup vs main_only [95% CI] (offline)",
        "accepted layers",
        "acceptance per drafted layer (LIBERO)",
        "action MSE (norm.)",
        "MSE vs main_only",
        "Δ success vs main_only, paired [95% CI]",
        "McNemar p",
    ):
        table.add_column(col)
    for r in rows:
        ci = r["success_ci95"]
        success = (
            "-"
            if r["success_rate"] is None
            else f"{r['success_rate']:.0%}" + (f" [{ci[0]:.0%}, {ci[1]:.0%}]" if ci else "")
        )
        per_layer = (
            " ".join(f"{a:.2f}" for a in r["acceptance_per_layer"])
            if r["acceptance_per_layer"]
            else "-"
        )
        table.add_row(
            r["decoder"],
            success,
            _fmt(r["episodes"], "d"),
            format_columns(r, "libero_speedup"),
            format_columns(r, "offline_speedup"),
            _fmt(r["mean_accepted_layers"], ".2f"),
            per_layer,
            _fmt(r["action_mse"], ".4f"),
            _fmt(r["action_mse_vs_main_only"], ".4f"),
            *format_paired(r.get("paired")),
        )
    spent = sum(timings.values())
    table.caption = (
        f"stage time this run: {spent / 60:.1f} min ("
        + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items() if v)
        + ")"
    )
    return table


def report(work: Path, decoders: list[str], timings: dict[str, float]) -> dict:
    """Print the table and return the rows (the quickstart writes them to ``results.json``)."""
    rows = collect_rows(work, decoders)
    Console(width=200).print(render(rows, timings))
    return {"rows": rows, "stage_seconds": timings}


def smoke_report(work: Path, store_path, timings: dict[str, float]) -> dict:
    """Print and return the smoke table: each stage passed (its ``.done`` marker) and its seconds,
    the store's hidden-state shape and identity, and the identity each LIBERO stage ran against."""
    from rsdvla.checkpoints import store_identity
    from rsdvla.data.store import HiddenStateStore

    store = HiddenStateStore(store_path)
    identity = store_identity(store)
    shape = [int(store.num_samples), int(store.hidden_dim)]
    table = Table(title="rsdvla smoke: every stage of the pipeline")
    for col in ("stage", "status", "seconds"):
        table.add_column(col)
    stages = {}
    for name, seconds in timings.items():
        passed = (work / name / ".done").exists()
        stages[name] = "passed" if passed else "missing"
        table.add_row(
            name,
            stages[name] + (" (done before)" if passed and not seconds else ""),
            f"{seconds:.0f}",
        )
    console = Console()
    console.print(table)
    console.print(f"hidden states: {shape} (samples x H), store identity: {identity}")
    return {"stages": stages, "hidden_shape": shape, "store_identity": identity}
