"""Figures written next to every ``summary.json``: acceptance per drafted layer and latency per stage."""

from __future__ import annotations

import os
from pathlib import Path


def plot_summary(summary: dict, path: str | os.PathLike, title: str = "") -> Path | None:
    """Two panels: acceptance rate per drafted layer (bars) and p50 latency per stage (ms).

    Reads ``acceptance_per_layer`` and ``latency_ms`` (``{stage: {"p50": ...}}``, or the offline
    form ``{"decoder": {stage: ...}, "main_only": {...}}``). Returns the PNG path, or None when
    the summary has nothing to plot. Written to a temporary name, then renamed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acceptance = summary.get("acceptance_per_layer") or []
    latency = summary.get("latency_ms") or {}
    series = latency if "decoder" in latency else {"decoder": latency}
    if not acceptance and not latency:
        return None
    fig, (ax_acc, ax_lat) = plt.subplots(1, 2, figsize=(10, 3.6))
    if acceptance:
        ax_acc.bar([f"L{i}" for i in range(len(acceptance))], acceptance, color="tab:blue")
        ax_acc.set_ylim(0, 1)
        for i, value in enumerate(acceptance):
            ax_acc.text(i, value + 0.02, f"{value:.2f}", ha="center", fontsize=8)
    ax_acc.set_title("draft acceptance per layer")
    ax_acc.set_ylabel("share of chunks")
    names: list[str] = []  # every stage of every series, in first-seen order
    for stages in series.values():
        names += [
            s
            for s, v in stages.items()
            if isinstance(v, dict) and v.get("p50") is not None and s not in names
        ]
    width = 0.8 / max(1, len(series))
    for j, (name, stages) in enumerate(series.items()):
        values = [stages[s]["p50"] if s in stages else 0.0 for s in names]
        ax_lat.bar([i + j * width for i in range(len(names))], values, width=width, label=name)
    ax_lat.set_xticks(
        [i + width * (len(series) - 1) / 2 for i in range(len(names))],
        names,
        rotation=30,
        ha="right",
        fontsize=8,
    )
    ax_lat.set_title("latency p50 per stage (ms)")
    if len(series) > 1:
        ax_lat.legend(fontsize=8)
    fig.suptitle(title or str(summary.get("decoder", ""))[:100], fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def save_figure(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` atomically (a hidden temp file, then a rename) and close it.

    A full disk or a read-only folder is one line naming the file; no temp file is left behind.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ValueError(
            f"{path}: cannot write ({err.strerror}); free space or fix permissions and rerun"
        ) from None
    finally:
        plt.close(fig)
    return path
