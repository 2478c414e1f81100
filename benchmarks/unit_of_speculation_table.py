"""The unit-of-speculation table of docs/results.md, from a frontier work dir's offline points.

    python benchmarks/unit_of_speculation_table.py [outputs/frontier]

One block of rows per tokenizer stack (the quickstart's RFSQ, then every stack of
``frontier.stacks`` found in the work dir): tokens per layer, reconstruction MSE over all
layers, main-only's action MSE, the draft's whole-layer agreement with main on layers 0-2
(``<stack>/quality.json``), then per exact RSD setting the accepted layers, passes per chunk,
the CPU-time speedup against the stack's own main-only with its 95% interval, and the roofline
prediction on an H100 at OpenVLA-OFT sizes (``gpu_prediction_openvla_size``; a prediction).
Prints markdown rows; nothing is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rsdvla.decoding.timing import format_ratio

STACK_SETTINGS = {
    "rsd_exact_k3": "exact k=3",
    "rsd_exact_k3_tree2": "k=3, tree 2",
    "rsd_exact_k3_tree4": "k=3, tree 4",
    "rsd_exact_k7": "exact k=7",
    "rsd_exact_k7_tree4": "k=7, tree 4",
}
HEADER = (
    "| stack | tokens / layer | recon MSE all layers | main-only action MSE "
    "| draft's whole-layer agreement L0 / L1 / L2 | setting | accepted layers | passes / chunk "
    "| CPU speedup vs own main-only [95% CI] | predicted H100, OpenVLA size |\n|" + "---|" * 10
)


def offline(work_dir: Path, name: str) -> dict:
    return json.loads((work_dir / name / "offline" / "summary.json").read_text())


def row(label: str, quality: dict | None, main_only: dict, setting: str, summary: dict) -> str:
    """One markdown row; ``quality`` None continues the stack above (its cells left empty)."""
    if quality is None:
        head = "| | | | | "
    else:
        recon = quality["recon_mse"][-1]
        agree = " / ".join(f"{100 * x:.0f}%" for x in quality["draft_layer_agreement"][:3])
        head = (
            f"| {label} | {quality['tokens_per_layer']} "
            f"| {'< 0.00001' if recon < 1e-5 else f'{recon:.4f}'} "
            f"| {main_only['action_mse']:.4f} | {agree} "
        )
    predicted = summary["gpu_prediction_openvla_size"]["H100"]["speedup"]["main_only"]
    return (
        f"{head}| {setting} | {summary['mean_accepted_layers']:.2f} "
        f"| {summary['cost_per_chunk']['decoder']['passes']:.1f} "
        f"| {format_ratio(summary['speed']['main_only'])} | {predicted:.2f}x |"
    )


def stack_label(quality: dict, stack: str) -> str:
    groups = quality["tokens_per_layer"]
    return f"RVQ G={groups}, C={quality['vocab_size']} (`{stack}`)"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path, nargs="?", default=Path("outputs/frontier"))
    work_dir = parser.parse_args(argv).work_dir
    lines = [HEADER]
    rfsq = json.loads((work_dir / "rfsq" / "quality.json").read_text())
    lines.append(
        row(
            "RFSQ (quickstart)",
            rfsq,
            offline(work_dir, "main_only"),
            "exact k=7",
            offline(work_dir, "rsd_exact"),
        )
    )
    for quality_file in sorted(work_dir.glob("*/quality.json")):
        stack = quality_file.parent.name
        if stack == "rfsq" or not (work_dir / f"{stack}_main_only" / "offline").is_dir():
            continue
        quality = json.loads(quality_file.read_text())
        main_only = offline(work_dir, f"{stack}_main_only")
        label = stack_label(quality, stack)
        for i, (name, setting) in enumerate(STACK_SETTINGS.items()):
            summary = offline(work_dir, f"{stack}_{name}")
            lines.append(row(label, quality if i == 0 else None, main_only, setting, summary))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
