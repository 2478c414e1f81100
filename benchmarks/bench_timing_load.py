"""Does the offline speed survive machine load? The same paired timing twice: idle, then with a busy process.

    python benchmarks/bench_timing_load.py                       # CPU-sized main (d 128, 2 layers)
    python benchmarks/bench_timing_load.py --rounds 400 --busy 2 --docs docs/benchmarks.md
    python benchmarks/bench_timing_load.py --rounds 400 --repeats 6 --busy 0   # idle-idle control

Decoders of the offline frontier's kinds (main-only at full depth and at m=3, RSD with the
context draft and ``agreement_corrected`` at threshold 0 at full depth and at m=3, draft-only),
random weights of the quickstart's CPU sizes, random hidden states at batch 1, one torch thread.
Each run times every decoder in interleaved rounds (``rsdvla.decoding.timing``: rotating order,
thread CPU time and wall per call) and reads each against ``main_only`` and, at depth 3, against
``main_only_m3``, with 95% bootstrap intervals over ``--blocks`` contiguous blocks of rounds (the
unit that carries the machine's drift; ``--blocks 1`` resamples single calls). ``--busy``
neighbour processes that spin on the CPU (``--neighbour spin``) or stream memory (``--neighbour
stream``) are started, and waited for, before anything is timed (``rsdvla.decoding.machine
.Neighbours``); they sleep through the idle run and work through the loaded one, and the cores
other processes kept busy are measured (``NeighbourLoad``). The runs agree for a setting when
their intervals on the CPU clock overlap; the wall-clock ratios are printed beside (they are
expected to move). ``--repeats N`` times N such pairs, the order alternating (idle first, then
loaded first), and adds a table of how many pairs agree and how far the loaded ratio shifts;
``--busy 0`` makes it a control, two idle runs, the drift with no load.
Beside them: passes per chunk and the roofline prediction on an H100 (float32, batch 1) of the
same calls (``rsdvla.decoding.cost``, ``rsdvla.decoding.roofline``). Exits 1 when some setting
disagrees. With ``--docs`` the table replaces the ``## Speed under
load`` section of that file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from rsdvla.decoding import (
    CorrectedAgreementAcceptance,
    DraftOnlyDecoder,
    MainOnlyDecoder,
    SpeculativeDecoder,
)
from rsdvla.decoding.cost import call_passes, mean_per_chunk
from rsdvla.decoding.machine import (
    NEIGHBOUR_KINDS,
    Neighbours,
    format_cores,
    machine_description,
)
from rsdvla.decoding.roofline import predicted_speed
from rsdvla.decoding.timing import (
    PairedTimer,
    check_blocks,
    format_ratio,
    intervals_overlap,
    rounds_per_block,
)
from rsdvla.evaluation.reports.aggregate import command_line, write_markdown_section
from rsdvla.models import ContextDraft, MainModel
from rsdvla.tokenizer import RFSQTokenizer

SECTION = "## Speed under load"
REFERENCES = {  # setting -> the references it reads against
    "main_only_m3": ["main_only"],
    "rsd_ctx_corr0": ["main_only"],
    "rsd_ctx_corr0_m3": ["main_only", "main_only_m3"],
    "draft_only_ctx": ["main_only", "main_only_m3"],
}


def build_decoders(hidden_dim: int) -> dict:
    """The timed decoders on one random CPU-sized stack (seeded)."""
    torch.manual_seed(0)
    main = MainModel(hidden_dim=hidden_dim, d_model=128, n_layers=2, n_heads=4).eval()
    tokenizer = RFSQTokenizer().eval()
    draft = ContextDraft(context_dim=128, num_draft_layers=3).eval()
    accept_all = CorrectedAgreementAcceptance(0.0)
    return {
        "main_only": MainOnlyDecoder(main, tokenizer),
        "main_only_m3": MainOnlyDecoder(main, tokenizer, depth=3),
        "rsd_ctx_corr0": SpeculativeDecoder(main, draft, tokenizer, accept_all),
        "rsd_ctx_corr0_m3": SpeculativeDecoder(main, draft, tokenizer, accept_all, depth=3),
        "draft_only_ctx": DraftOnlyDecoder(main, draft, tokenizer),
    }


def span(values: list[float]) -> str:
    """``1.01-1.17x``: the smallest and largest of per-block ratios."""
    return f"{min(values):.2f}-{max(values):.2f}x"


def timed_run(
    decoders: dict, h: torch.Tensor, rounds: int, warmup: int, resamples: int, blocks: int
):
    """``(setting -> reference -> speed entry, name -> per-call passes)`` of one run (every decoder
    on rows of ``h`` in turn, batch 1; intervals over ``blocks`` blocks of rounds)."""
    for decoder in decoders.values():
        for _ in range(warmup):
            decoder(h[:1])
    timer = PairedTimer(list(decoders), block_rounds=rounds_per_block(rounds, blocks))
    calls = dict(decoders)
    passes = {name: [] for name in decoders}
    for i in range(rounds):
        results = timer.round(calls, h[i % len(h) : i % len(h) + 1])
        for name, result in results.items():
            passes[name].append(call_passes(decoders[name], result.stats))
    speed = {
        name: {
            ref: {
                **timer.speed(name, ref, "--reference", resamples),
                "block_speeds": timer.block_speeds(name, ref),
            }
            for ref in refs
        }
        for name, refs in REFERENCES.items()
    }
    return speed, passes


def repeated_summary(pairs: list[dict]) -> tuple[str, bool]:
    """A markdown table over repeated (idle, loaded) pairs: per setting and reference, how many
    pairs agree (CPU-time intervals overlap), the median idle and loaded speedups, and the
    median and range of the shift (loaded speedup / idle speedup). Also whether all agree."""
    lines = [
        "| setting | reference | pairs that agree | idle: median speedup | loaded: median speedup "
        "| shift: median (range over pairs) |",
        "|---|---|---|---|---|---|",
    ]
    agreed = total = 0
    for name, refs in REFERENCES.items():
        for ref in refs:
            idle = [pair["idle"][name][ref] for pair in pairs]
            loaded = [pair["loaded"][name][ref] for pair in pairs]
            same = sum(
                intervals_overlap(a["ci95"], b["ci95"]) for a, b in zip(idle, loaded, strict=True)
            )
            shifts = [b["ratio"] / a["ratio"] for a, b in zip(idle, loaded, strict=True)]
            agreed, total = agreed + same, total + len(pairs)
            lines.append(
                f"| {name} | {ref} | {same} of {len(pairs)} "
                f"| {statistics.median(a['ratio'] for a in idle):.2f}x "
                f"| {statistics.median(b['ratio'] for b in loaded):.2f}x "
                f"| {statistics.median(shifts):.3f} ({min(shifts):.3f}-{max(shifts):.3f}) |"
            )
    lines.append(f"| all | | {agreed} of {total} | | | |")
    return "\n".join(lines), agreed == total


def main(argv=None) -> bool:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--busy", type=int, default=1, help="busy processes during the second run")
    parser.add_argument(
        "--neighbour",
        choices=list(NEIGHBOUR_KINDS),
        default="spin",
        help="what the busy processes do: spin (a Python loop) or stream (copy 256 MB over and over)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="pairs of runs (idle, loaded), the order alternating; with 0 --busy an idle-idle control",
    )
    parser.add_argument(
        "--section", default=SECTION, help="the docs heading whose section is replaced"
    )
    parser.add_argument("--hidden-dim", type=int, default=512)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--blocks", type=int, default=10, help="blocks of rounds the interval resamples (1: calls)"
    )
    parser.add_argument(
        "--docs", type=Path, help="markdown file whose '## Speed under load' is replaced"
    )
    args = parser.parse_args(argv)
    check_blocks(args.blocks, "--blocks")
    if args.repeats < 1 or args.busy < 0:
        parser.error(
            f"--repeats={args.repeats}, --busy={args.busy}: use --repeats >= 1, --busy >= 0"
        )
    torch.set_num_threads(1)  # all of a call's work in the calling thread: thread CPU time holds it
    decoders = build_decoders(args.hidden_dim)
    h = torch.randn(64, args.hidden_dim, generator=torch.Generator().manual_seed(1))
    run = (args.rounds, args.warmup, args.resamples, args.blocks)
    pairs = []
    with Neighbours([args.neighbour] * args.busy, running=False) as busy:  # all started
        for repeat in range(args.repeats):
            # odd repeats run loaded first, so drift within a pair favours neither condition
            order = ("idle", "loaded") if repeat % 2 == 0 else ("loaded", "idle")
            pair = {}
            for condition in order:
                busy.wake() if condition == "loaded" else busy.pause()
                pair[condition], passes = timed_run(decoders, h, *run)
            pairs.append(pair)
            if args.repeats > 1:
                print(f"pair {repeat + 1}/{args.repeats} timed", flush=True)
    idle, loaded = pairs[0]["idle"], pairs[0]["loaded"]
    lines = [
        "| setting | reference | idle: CPU-time speedup [95% CI] | loaded: CPU-time speedup [95% CI] "
        "| intervals overlap | idle: range of block ratios | loaded: range of block ratios "
        "| idle: wall speedup | loaded: wall speedup | passes per chunk "
        "| predicted H100 speedup (roofline, not measured) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    agree = True
    for name, refs in REFERENCES.items():
        for ref in refs:
            a, b = idle[name][ref], loaded[name][ref]
            same = intervals_overlap(a["ci95"], b["ci95"])
            agree &= same
            predicted = predicted_speed(passes, name, [ref], 1, "float32")["H100"]["speedup"][ref]
            lines.append(
                f"| {name} | {ref} | {format_ratio(a)} | {format_ratio(b)} | {'yes' if same else 'NO'} "
                f"| {span(a['block_speeds'])} | {span(b['block_speeds'])} "
                f"| {a['wall_ratio']:.2f}x | {b['wall_ratio']:.2f}x "
                f"| {mean_per_chunk(passes[name], 1)['passes']:.1f} | {predicted:.2f}x |"
            )
    table = "\n".join(lines)
    if args.repeats > 1:
        summary, agree = repeated_summary(pairs)
        table = (
            f"The first pair:\n\n{table}\n\nAll {args.repeats} pairs (a pair agrees for a "
            "setting when its two CPU-time intervals overlap; shift: the loaded ratio over the "
            "idle one):\n\n" + summary
        )
    print(table)
    command = command_line("benchmarks/bench_timing_load.py", argv)
    cores = [
        format_cores(run["main_only_m3"]["main_only"]["neighbour_cores"]) for run in (idle, loaded)
    ]
    pairs_text = (
        f"{args.repeats} pairs of runs, the order within a pair alternating (idle first, then "
        "loaded first), "
        if args.repeats > 1
        else ""
    )
    control = " (a control: both runs idle)" if args.busy == 0 else ""
    body = (
        f"Measured with `{command}` on CPU: {machine_description(1)}, torch "
        f"{torch.__version__}, {time.strftime('%Y-%m-%d')}: random weights of the quickstart's CPU sizes (main "
        f"d_model 128, 2 layers; context draft k=3), batch 1, {pairs_text}{args.rounds} interleaved "
        f"rounds per run; the loaded run beside {args.busy} busy process(es) of kind "
        f"`{args.neighbour}`{control} (cores other processes kept busy in the first pair: idle "
        f"{cores[0]}, loaded {cores[1]}). Clock: the calling thread's CPU "
        "time (`rsdvla.decoding.timing`); wall ratios beside for contrast. Intervals: "
        + (
            "resampling single calls. "
            if args.blocks == 1
            else f"resampling {args.blocks} contiguous blocks of rounds. "
        )
        + f"{'Every setting agrees' if agree else 'NOT every setting agrees'} within the intervals.\n\n"
        + table
    )
    if args.docs:
        write_markdown_section(args.docs, args.section, body, title="# Benchmarks")
        print(f"wrote the '{args.section}' section of {args.docs}")
    return agree


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
