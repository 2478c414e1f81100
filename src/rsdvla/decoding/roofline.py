"""A roofline prediction of a decoder call's time on a GPU, from counted passes (an estimate, not a measurement).

Per pass (``rsdvla.decoding.cost.PassCost``) at batch B:
``seconds = max(B * flops / peak, weight_bytes / bandwidth) + kernels * launch_s``; a call is the
sum of its passes (they are sequential). The predicted speedup of a setting against a reference
is ``mean predicted call seconds of the reference / of the setting`` over the same calls (the
setting's measured acceptance decides its passes). Peaks are the vendors' published dense
(no sparsity) figures; ``launch_s`` is the per-kernel launch cost of eager PyTorch, an assumed
round figure that ``benchmarks/gpu_checks.sh`` checks against measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

from rsdvla.decoding.cost import PassCost


@dataclass(frozen=True)
class GPU:
    """Published peaks: ``peak_flops[precision]`` (FLOP/s, dense) and ``bandwidth`` (bytes/s of HBM)."""

    name: str
    peak_flops: dict
    bandwidth: float
    source: str


DEVICES = {
    "A100": GPU(
        "NVIDIA A100 SXM4 80GB",
        {"bfloat16": 312e12, "float32": 19.5e12},
        2.039e12,
        "NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS dense, FP32 19.5 TFLOPS, HBM2e 2,039 GB/s",
    ),
    "H100": GPU(
        "NVIDIA H100 SXM5 80GB",
        {"bfloat16": 989.4e12, "float32": 66.9e12},
        3.35e12,
        "NVIDIA H100 datasheet: BF16 Tensor Core 1,979 TFLOPS with sparsity (989.4 dense), FP32 "
        "66.9 TFLOPS, HBM3 3.35 TB/s",
    ),
    "H200": GPU(
        "NVIDIA H200 SXM 141GB",
        {"bfloat16": 989.4e12, "float32": 66.9e12},
        4.8e12,
        "NVIDIA H200 datasheet: the H100's compute (989.4 dense BF16 TFLOPS, FP32 66.9), HBM3e 4.8 TB/s",
    ),
}
LAUNCH_S = 5e-6
"""Seconds per kernel launch (eager PyTorch on a CUDA GPU; assumed, checked by gpu_checks.sh)."""


OFT_STEP_S = {"A100": 0.073}
"""Published OpenVLA-OFT policy step (backbone forward + its parallel action head, one 8-action
chunk) on LIBERO: 0.073 s on an A100 (Kim, Finn, Liang 2025, arXiv:2502.19645, the paper's
LIBERO throughput table: 109.7 Hz = 8 actions / 0.073 s). A published figure, not measured here."""


def amdahl_step_speedup(backbone_s: float, reference_s: float, setting_s: float) -> float:
    """Policy-step speedup ``(backbone + reference decode) / (backbone + setting decode)``; its
    bound as the decoder gets free is ``(backbone + reference decode) / backbone``."""
    return (backbone_s + reference_s) / (backbone_s + setting_s)


def get_device(name: str, field: str = "gpu device") -> GPU:
    if name not in DEVICES:
        raise ValueError(
            f"{field}={name!r} is not in the roofline table (known: {', '.join(DEVICES)}); "
            f"use one of them or add its published peak and bandwidth to rsdvla/decoding/roofline.py"
        )
    return DEVICES[name]


def pass_seconds(
    p: PassCost, batch: int, gpu: GPU, precision: str, launch_s: float = LAUNCH_S
) -> float:
    """``max(batch * flops / peak, weight_bytes / bandwidth) + kernels * launch_s``."""
    peak = gpu.peak_flops[precision]
    return max(batch * p.flops / peak, p.weight_bytes / gpu.bandwidth) + p.kernels * launch_s


def call_seconds(
    passes: list[PassCost], batch: int, gpu: GPU, precision: str, launch_s: float = LAUNCH_S
) -> float:
    """Predicted seconds of one call (its passes one after the other)."""
    return sum(pass_seconds(p, batch, gpu, precision, launch_s) for p in passes)


def predicted_speed(
    calls: dict[str, list[list[PassCost]]],
    setting: str,
    references: list[str],
    batch: int,
    precision: str,
    launch_s: float = LAUNCH_S,
) -> dict:
    """Per device of :data:`DEVICES`: ``call_ms`` (mean predicted ms per call of every timed name)
    and ``speedup`` (``reference -> predicted ratio`` of ``setting``); ``calls[name]``: the passes
    of each call, from the decoders' own stats on the same inputs."""
    out = {}
    for key, gpu in DEVICES.items():
        ms = {
            name: 1e3
            * sum(call_seconds(p, batch, gpu, precision, launch_s) for p in per)
            / len(per)
            for name, per in calls.items()
        }
        out[key] = {"call_ms": ms, "speedup": {ref: ms[ref] / ms[setting] for ref in references}}
        if key in OFT_STEP_S:  # a 7B OpenVLA-OFT backbone in front of the decoder (Amdahl)
            step = OFT_STEP_S[key]
            out[key]["oft_step_speedup"] = {
                ref: amdahl_step_speedup(step, ms[ref] / 1e3, ms[setting] / 1e3)
                for ref in references
            }
            out[key]["oft_step_bound"] = {
                ref: amdahl_step_speedup(step, ms[ref] / 1e3, 0.0) for ref in references
            }
    return out
