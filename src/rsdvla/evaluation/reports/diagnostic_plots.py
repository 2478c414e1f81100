"""Figures of where a decoder departs from main-only, from episode records.

``diagnostics.png`` (written next to an evaluation's summary when its records carry
``hidden_shift``/``divergence``/``diagnostics``, and by ``compare`` per run), three panels:

1. acceptance per drafted layer, aligned at the first grasp (``diagnostics.grasp``; ``x`` = policy
   step - first grasp step, mean over the episodes that grasp);
2. divergence from main-only (``divergence.max_abs_norm``, mean) on the same aligned axis, with
   the share of chunks whose gripper command differs;
3. accepted layers against hidden-state shift (``hidden_shift``), every chunk a point, and the
   mean per shift quintile.

Per-step fields map to chunks through ``diagnostics.chunk`` (the chunk each step executed).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rsdvla.evaluation.reports.plots import save_figure


def has_diagnostics(records: Sequence[dict]) -> bool:
    return any(r.get("hidden_shift") or r.get("divergence") for r in records)


def aligned_at_grasp(records: Sequence[dict]) -> dict[str, dict[int, list]]:
    """``{"layers": {x: [per-layer acceptance rows]}, "max_abs_norm": {x: [...]},
    "gripper_differs": {x: [...]}}`` over episodes with a grasp; ``x`` = step - first grasp step."""
    out: dict[str, dict[int, list]] = {
        "layers": defaultdict(list),
        "max_abs_norm": defaultdict(list),
        "gripper_differs": defaultdict(list),
    }
    for r in records:
        diag = r.get("diagnostics") or {}
        grasp, chunk = diag.get("grasp") or [], diag.get("chunk") or []
        if True not in grasp or len(chunk) != len(grasp):
            continue
        first = grasp.index(True)
        acceptance = r.get("layer_acceptance") or []
        divergence = r.get("divergence") or {}
        for step, c in enumerate(chunk):
            x = step - first
            if acceptance and 0 <= c < len(acceptance):
                out["layers"][x].append(acceptance[c])
            for key in ("max_abs_norm", "gripper_differs"):
                values = divergence.get(key) or []
                if 0 <= c < len(values) and values[c] is not None:
                    out[key][x].append(float(values[c]))
    return out


def aligned_at_start(records: Sequence[dict]) -> dict[str, dict[int, list]]:
    """As :func:`aligned_at_grasp` for records without grasp data (``env.diagnostics=false``):
    ``x`` = the chunk's index in its episode (chunk 0 starts at the first policy step)."""
    out: dict[str, dict[int, list]] = {
        "layers": defaultdict(list),
        "max_abs_norm": defaultdict(list),
        "gripper_differs": defaultdict(list),
    }
    for r in records:
        for c, row in enumerate(r.get("layer_acceptance") or []):
            out["layers"][c].append(row)
        divergence = r.get("divergence") or {}
        for key in ("max_abs_norm", "gripper_differs"):
            for c, value in enumerate(divergence.get(key) or []):
                if value is not None:
                    out[key][c].append(float(value))
    return out


def shift_vs_acceptance(records: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per chunk with both: ``(hidden_shift, accepted_layers)`` arrays."""
    xs, ys = [], []
    for r in records:
        for s, a in zip(r.get("hidden_shift") or [], r.get("accepted_layers") or [], strict=False):
            if s is not None and a is not None:
                xs.append(float(s))
                ys.append(float(a))
    return np.asarray(xs), np.asarray(ys)


def plot_diagnostics(
    records: Sequence[dict], path: str | os.PathLike, title: str = ""
) -> Path | None:
    """Write the three panels to ``path``; None (nothing written) when no record has diagnostics."""
    if not has_diagnostics(records):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_div, ax_shift) = plt.subplots(1, 3, figsize=(16, 4.2))
    aligned = aligned_at_grasp(records)
    at_grasp = bool(aligned["layers"] or aligned["max_abs_norm"])
    if not at_grasp:  # no grasp recorded (env.diagnostics=false): over episode time instead
        aligned = aligned_at_start(records)
    if aligned["layers"]:
        xs = sorted(aligned["layers"])
        width = max(len(row) for rows in aligned["layers"].values() for row in rows)
        for layer in range(width):
            ys = [
                np.mean([row[layer] for row in aligned["layers"][x] if len(row) > layer])
                for x in xs
            ]
            ax_acc.plot(xs, ys, label=f"layer {layer}")
        ax_acc.legend(fontsize=7)
    else:
        ax_acc.text(
            0.5, 0.5, "no grasp or no drafted layers", ha="center", transform=ax_acc.transAxes
        )
    ax_acc.set_title("acceptance per drafted layer")
    ax_acc.set_ylabel("share of episodes accepting")
    if aligned["max_abs_norm"]:
        xs = sorted(aligned["max_abs_norm"])
        ax_div.plot(xs, [np.mean(aligned["max_abs_norm"][x]) for x in xs], label="max |a - a_main|")
        ax_div.plot(
            xs,
            [np.mean(aligned["gripper_differs"][x]) for x in xs],
            label="gripper differs (share)",
        )
        ax_div.legend(fontsize=7)
    else:
        ax_div.text(0.5, 0.5, "no grasp or no baseline", ha="center", transform=ax_div.transAxes)
    ax_div.set_title("divergence from main-only (normalized arm units)")
    for ax in (ax_acc, ax_div):
        if at_grasp:
            ax.axvline(0, color="grey", lw=0.8, ls="--")
            ax.set_xlabel("policy step - first grasp")
        else:
            ax.set_xlabel("chunk of the episode (no grasp data: env.diagnostics=true aligns at it)")
        ax.grid(alpha=0.3)
    shift, accepted = shift_vs_acceptance(records)
    if len(shift):
        ax_shift.scatter(shift, accepted, s=4, alpha=0.3)
        edges = np.unique(np.quantile(shift, np.linspace(0, 1, 6)))
        if len(edges) > 1:
            bins = np.clip(np.digitize(shift, edges[1:-1]), 0, len(edges) - 2)
            centers = [(edges[i] + edges[i + 1]) / 2 for i in range(len(edges) - 1)]
            means = [
                accepted[bins == i].mean() if (bins == i).any() else np.nan
                for i in range(len(centers))
            ]
            ax_shift.plot(centers, means, color="tab:red", marker="o", label="mean per quintile")
            ax_shift.legend(fontsize=7)
    else:
        ax_shift.text(0.5, 0.5, "no drafted chunks", ha="center", transform=ax_shift.transAxes)
    ax_shift.set_xlabel("hidden-state shift |h_t - h_prev| / |h_prev|")
    ax_shift.set_ylabel("accepted layers")
    ax_shift.set_title("acceptance vs scene change")
    ax_shift.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
