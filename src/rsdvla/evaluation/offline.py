"""Offline evaluation on the held-out episodes of a hidden-state store (no simulator, DESIGN 2.7).

The configured decoder and greedy ``main_only`` run side by side on the same batches, in
alternating order, after warm-up. ``summary.json`` (written atomically into the run directory)
holds: action MSE vs ground truth for both (normalized units, and raw units via the
normalizer), action MSE of the decoder vs main-only, code agreement with main-only (share of
identical tokens and of identical chunks), acceptance per drafted layer and mean accepted
layers (over calls that speculated, counted as the LIBERO policy counts them), decoded layers per
chunk (truncated and adaptive depth), latency p50/p95 per stage for both (ms per decoder call of
``env.batch_size`` chunks), and the speed of the decoder from ``rsdvla.decoding.timing``: against
full main-only and, for a decoder of truncated depth m, against ``main_only_m{m}`` timed in the
same rounds (``speed``: ratio of medians on the CPU clock, its 95% bootstrap interval over
``env.timing_blocks`` contiguous blocks of the calls, wall time beside; ``speedup`` is the one against ``env.speed_reference``). ``cost_per_chunk``
counts every timed decoder's passes, positions, FLOPs and weight bytes (``rsdvla.decoding.cost``)
and ``gpu_prediction`` is the roofline estimate of the same calls (``rsdvla.decoding.roofline``);
``gpu_prediction_openvla_size`` counts the same calls (the same acceptance) at the models'
OpenVLA-OFT sizes in bfloat16 (``rsdvla.decoding.cost.at_openvla_size``): both are estimates.

Config read: ``data.path``, ``data.val_fraction``, ``data.seed``; ``env.split``, ``env.batch_size``,
``env.max_batches``, ``env.warmup``, ``env.shuffle``, ``env.speed_reference``,
``env.bootstrap_resamples``, ``env.timing_blocks``, ``env.torch_threads``; ``paths.output_dir`` (or Hydra's run dir).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch
from omegaconf import DictConfig

from rsdvla.data.split import split_episodes
from rsdvla.data.store import HiddenStateStore, StoreError
from rsdvla.decoding import STAGES, DecodeResult, MainOnlyDecoder
from rsdvla.decoding.cost import at_openvla_size, call_passes, mean_per_chunk
from rsdvla.decoding.machine import machine_description
from rsdvla.decoding.roofline import predicted_speed
from rsdvla.decoding.stats import speculated_acceptance
from rsdvla.decoding.timing import (
    DEFAULT_REFERENCE,
    RESAMPLES,
    PairedTimer,
    check_blocks,
    check_resamples,
    decoder_depth,
    depth_reference,
    format_speed,
    rounds_per_block,
)
from rsdvla.evaluation.reports.aggregate import write_json_atomic
from rsdvla.evaluation.reports.plots import plot_summary

SPLITS = ("val", "train", "all")


# ------------------------------------------------------------------------------------ data


def load_split_rows(
    path, split: str, val_fraction: float, seed: int, shuffle: bool, limit: int | None
):
    """Rows of one episode split of a store -> (``hidden[n, H]`` float32, ``actions[n, T, A]``).

    ``split`` is ``val`` / ``train`` (``split_episodes(episode, val_fraction, seed)``) or ``all``;
    rows are taken in a ``seed``-shuffled order when ``shuffle`` and cut to ``limit``.
    """
    if split not in SPLITS:
        raise ValueError(f"env.split must be one of {SPLITS}, got {split!r}")
    store = HiddenStateStore(path)
    episode = store.load(("episode",))["episode"]
    train_ids, val_ids = split_episodes(episode, val_fraction, seed)
    ids = {"val": val_ids, "train": train_ids, "all": np.unique(episode)}[split]
    rows = np.flatnonzero(np.isin(episode, ids))
    if len(rows) == 0:
        raise StoreError(
            f"{store.path}: env.split={split} selects no rows (data.val_fraction={val_fraction}); "
            "set data.val_fraction > 0 or env.split=all"
        )
    if shuffle:
        rows = np.random.default_rng(seed).permutation(rows)
    if limit is not None:
        rows = rows[:limit]
    ordered = np.sort(rows)  # h5py reads increasing indices; put the chosen order back after
    with h5py.File(store.path, "r") as f:
        hidden, actions = f["hidden"][ordered], f["actions"][ordered]
    back = np.searchsorted(ordered, rows)
    return hidden[back].astype(np.float32), actions[back].astype(np.float32)


# ------------------------------------------------------------------------------------ metrics


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    values = np.asarray(seconds) * 1e3
    return {
        "p50": float(np.percentile(values, 50)),
        "p95": float(np.percentile(values, 95)),
        "mean": float(values.mean()),
    }


@dataclass
class SideBySide:
    """Running sums over batches of the decoder vs main-only comparison."""

    sq_err: dict = field(default_factory=lambda: defaultdict(float))
    elements: int = 0
    tokens_same: int = 0
    tokens: int = 0
    chunks_same: int = 0
    chunks: int = 0
    layer_accepted: np.ndarray | None = None
    token_agreement: np.ndarray | None = None
    accepted_layers: float = 0.0
    speculated_chunks: int = 0
    decoded_layers: float = 0.0
    main_steps: list = field(default_factory=list)
    seconds: dict = field(
        default_factory=lambda: {"decoder": defaultdict(list), "main_only": defaultdict(list)}
    )

    def add(
        self,
        decoded: DecodeResult,
        baseline: DecodeResult,
        truth: torch.Tensor,
        normalizer,
    ) -> None:
        raw_truth = normalizer.unnormalize(truth) if normalizer is not None else None
        for name, result in (("decoder", decoded), ("main_only", baseline)):
            self.sq_err[name] += float(((result.actions - truth) ** 2).sum())
            if raw_truth is not None:
                self.sq_err[name + "_raw"] += float(
                    ((normalizer.unnormalize(result.actions) - raw_truth) ** 2).sum()
                )
            for stage, value in result.stats.seconds.items():
                self.seconds[name][stage].append(value)
        self.sq_err["vs_main_only"] += float(((decoded.actions - baseline.actions) ** 2).sum())
        self.elements += truth.numel()
        # truncated-depth decoders return fewer layers: compare the layers both decoded, and
        # count a chunk as identical only when it has every layer main-only has
        depth = min(decoded.codes.shape[-1], baseline.codes.shape[-1])
        same = decoded.codes[..., :depth] == baseline.codes[..., :depth]
        self.tokens_same += int(same.sum())
        self.tokens += baseline.codes.numel()
        full = decoded.codes.shape[-1] >= baseline.codes.shape[-1]
        self.chunks_same += int(same.flatten(1).all(1).sum()) if full else 0
        self.chunks += same.shape[0]
        self.main_steps.append(decoded.stats.num_main_steps)
        stats = decoded.stats
        layers = getattr(stats, "decoded_layers", None)
        self.decoded_layers += (
            float(layers.float().sum()) if layers is not None else depth * same.shape[0]
        )
        accepted, flags = speculated_acceptance(stats)  # the same count as the LIBERO policy
        if accepted is not None and flags is not None:
            layer_sum = flags.float().sum(0).cpu().numpy()
            agree_sum = stats.token_agreement.float().sum(0).cpu().numpy()
            self.layer_accepted = (
                layer_sum if self.layer_accepted is None else self.layer_accepted + layer_sum
            )
            self.token_agreement = (
                agree_sum if self.token_agreement is None else self.token_agreement + agree_sum
            )
            self.accepted_layers += float(accepted.float().sum())
            self.speculated_chunks += accepted.shape[0]

    def summary(self, timer: PairedTimer) -> dict:
        """The accuracy and acceptance figures; ``latency_ms`` per stage (decoder stage timers,
        wall) with ``total`` from ``timer`` (wall and ``total_cpu``)."""
        spec = max(self.speculated_chunks, 1)
        latency = {
            name: {
                stage: percentiles_ms(values) for stage, values in stages.items() if stage in STAGES
            }
            for name, stages in self.seconds.items()
        }
        for name in latency:
            latency[name]["total"] = percentiles_ms(timer.wall[name])
            latency[name]["total_cpu"] = percentiles_ms(timer.cpu[name])
        return {
            "action_mse": self.sq_err["decoder"] / self.elements,
            "main_only_action_mse": self.sq_err["main_only"] / self.elements,
            "action_mse_vs_main_only": self.sq_err["vs_main_only"] / self.elements,
            "action_mse_raw": self.sq_err.get("decoder_raw", float("nan")) / self.elements,
            "main_only_action_mse_raw": self.sq_err.get("main_only_raw", float("nan"))
            / self.elements,
            "token_agreement": self.tokens_same / self.tokens,
            "chunk_agreement": self.chunks_same / self.chunks,
            "mean_accepted_layers": self.accepted_layers / spec if self.speculated_chunks else None,
            "acceptance_per_layer": (self.layer_accepted / spec).tolist()
            if self.speculated_chunks
            else [],
            "draft_token_agreement": (self.token_agreement / spec).tolist()
            if self.speculated_chunks
            else [],
            "speculated_share": self.speculated_chunks / self.chunks,
            "mean_main_steps": float(np.mean(self.main_steps)),
            "mean_decoded_layers": self.decoded_layers / self.chunks,
            "latency_ms": latency,
            "latency_p50_ms": latency["decoder"]["total"]["p50"],
            "latency_p95_ms": latency["decoder"]["total"]["p95"],
            "main_only_latency_p50_ms": latency["main_only"]["total"]["p50"],
        }


# ------------------------------------------------------------------------------------ running


def output_dir(cfg: DictConfig) -> Path:
    """``cfg.paths.output_dir`` when it resolves, else Hydra's run directory."""
    try:
        value = cfg.paths.output_dir
    except Exception:  # ${hydra:...} outside a Hydra run
        value = None
    if not value:
        from hydra.core.hydra_config import HydraConfig

        value = HydraConfig.get().runtime.output_dir
    return Path(value)


def print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"offline evaluation: {summary['decoder']} ({summary['num_chunks']} chunks)"
    )
    table.add_column("metric")
    table.add_column("decoder", justify="right")
    table.add_column("main_only", justify="right")
    table.add_row(
        "action MSE (normalized)",
        f"{summary['action_mse']:.5f}",
        f"{summary['main_only_action_mse']:.5f}",
    )
    table.add_row("action MSE vs main_only", f"{summary['action_mse_vs_main_only']:.5f}", "0")
    table.add_row(
        "token / chunk agreement",
        f"{summary['token_agreement']:.4f} / {summary['chunk_agreement']:.4f}",
        "1 / 1",
    )
    if summary["mean_accepted_layers"] is not None:
        per_layer = " ".join(f"{x:.2f}" for x in summary["acceptance_per_layer"])
        table.add_row(
            "accepted layers (per layer)",
            f"{summary['mean_accepted_layers']:.2f} ({per_layer})",
            "-",
        )
    table.add_row(
        "main steps per call", f"{summary['mean_main_steps']:.2f}", str(summary["num_layers"])
    )
    table.add_row(
        "decoded layers per chunk",
        f"{summary['mean_decoded_layers']:.2f}",
        str(summary["num_layers"]),
    )
    for stage in (*STAGES, "total"):
        d, m = summary["latency_ms"]["decoder"][stage], summary["latency_ms"]["main_only"][stage]
        table.add_row(
            f"{stage} ms p50 / p95",
            f"{d['p50']:.2f} / {d['p95']:.2f}",
            f"{m['p50']:.2f} / {m['p95']:.2f}",
        )
    for entry in summary["speed"].values():
        table.add_row(f"speed vs {entry['reference']}", format_speed(entry), "")
    for name, cost in summary["cost_per_chunk"].items():
        table.add_row(
            f"passes / GFLOPs / weight MB per chunk ({name})",
            f"{cost['passes']:.2f} / {cost['gflops']:.3f} / {cost['weight_mb']:.1f}",
            "",
        )
    for ref, value in summary["gpu_prediction"]["H100"]["speedup"].items():
        table.add_row(
            f"predicted H100 speedup vs {ref} (roofline, not measured)", f"{value:.2f}x", ""
        )
    Console().print(table)


def run_offline(cfg: DictConfig, stack) -> dict:
    """Evaluate ``stack.decoder`` against greedy main-only on held-out store rows; returns the summary.

    ``stack`` provides ``main``, ``tokenizer``, ``decoder``, ``normalizer`` and optionally
    ``baseline`` (a main-only decoder) and ``device``.
    """
    env = cfg.env
    batch_size, warmup = int(env.batch_size), int(env.get("warmup", 0))
    max_batches = env.get("max_batches")
    if batch_size < 1:
        raise ValueError(f"env.batch_size must be >= 1, got {batch_size}")
    if env.get("torch_threads"):  # one thread: all of a call's CPU time is the calling thread's
        torch.set_num_threads(int(env.torch_threads))
    limit = None if max_batches is None else int(max_batches) * batch_size
    hidden, actions = load_split_rows(
        cfg.data.path,
        env.get("split", "val"),
        float(cfg.data.val_fraction),
        int(cfg.data.seed),
        bool(env.get("shuffle", True)),
        limit,
    )
    main = stack.main
    if hidden.shape[1] != main.config.hidden_dim:
        raise StoreError(
            f"{cfg.data.path}: hidden states are {hidden.shape[1]}-d but the main model expects {main.config.hidden_dim}; "
            "evaluate on a store written by the backbone the models were trained on"
        )
    device = getattr(stack, "device", None) or next(main.parameters()).device
    decoder = stack.decoder
    baseline = getattr(stack, "baseline", None) or MainOnlyDecoder(main, stack.tokenizer)
    timed = {"decoder": decoder, DEFAULT_REFERENCE: baseline}
    depth_ref = depth_reference(decoder_depth(decoder), main.config.num_code_layers)
    if depth_ref is not None:  # main-only at the decoder's own depth, timed in the same rounds
        timed[depth_ref] = MainOnlyDecoder(main, stack.tokenizer, depth=decoder_depth(decoder))
    reference = str(env.get("speed_reference", DEFAULT_REFERENCE))
    resamples = check_resamples(
        env.get("bootstrap_resamples", RESAMPLES), "env.bootstrap_resamples"
    )
    blocks = check_blocks(env.get("timing_blocks", 1), "env.timing_blocks")
    batches = [
        (
            torch.from_numpy(hidden[i : i + batch_size]).to(device),
            torch.from_numpy(actions[i : i + batch_size]).to(device),
        )
        for i in range(0, len(hidden), batch_size)
    ]
    for _ in range(warmup):
        for dec in timed.values():
            dec(batches[0][0])
    acc = SideBySide()
    timer = PairedTimer(
        list(timed), device=device, block_rounds=rounds_per_block(len(batches), blocks)
    )
    passes: dict[str, list] = {name: [] for name in timed}
    # the same calls counted at the models' OpenVLA-OFT sizes (cost.at_openvla_size)
    passes_at_size: dict[str, list] = {name: [] for name in timed}
    precision = getattr(stack, "precision", "float32")
    for h, truth in batches:
        results = timer.round(timed, h)
        acc.add(results["decoder"], results[DEFAULT_REFERENCE], truth, stack.normalizer)
        for name, result in results.items():
            passes[name].append(call_passes(timed[name], result.stats, precision))
            passes_at_size[name].append(
                call_passes(timed[name], result.stats, "bfloat16", at_openvla_size)
            )
    references = [DEFAULT_REFERENCE, *([depth_ref] if depth_ref else [])]
    if reference not in references:
        references.append(reference)  # refused by timer.speed when it was not timed
    speed = {
        ref: timer.speed("decoder", ref, "env.speed_reference", resamples, int(cfg.data.seed))
        for ref in references
    }
    summary = {
        "kind": "offline",
        "decoder": repr(decoder),
        "store": str(cfg.data.path),
        "split": env.get("split", "val"),
        "num_chunks": len(hidden),
        "num_batches": len(batches),
        "batch_size": batch_size,
        "num_layers": main.config.num_code_layers,
        "device": str(device),
        "precision": precision,
        "torch_threads": torch.get_num_threads(),
        "machine": machine_description(torch.get_num_threads()),
        **acc.summary(timer),
        "speed": speed,
        "speed_reference": reference,
        "speedup": speed[reference]["ratio"],
        "speedup_ci95": speed[reference]["ci95"],
        "speedup_clock": speed[reference]["clock_name"],
        "cost_per_chunk": {name: mean_per_chunk(p, batch_size) for name, p in passes.items()},
        "gpu_prediction": predicted_speed(passes, "decoder", references, batch_size, precision),
        "gpu_prediction_openvla_size": predicted_speed(
            passes_at_size, "decoder", references, batch_size, "bfloat16"
        ),
    }
    write_json_atomic(output_dir(cfg) / "summary.json", summary)
    plot_summary(summary, output_dir(cfg) / "summary.png")
    print_table(summary)
    return summary
