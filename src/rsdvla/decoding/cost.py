"""Cost of a decoder call that does not depend on the machine: passes, positions, FLOPs, weight bytes.

Counted from the models' configs (``MainConfig``: ``d_model``, ``n_layers``, ``hidden_dim``,
``tokens_per_layer`` N, ``levels`` K, ``num_code_layers`` L; the draft's config) and the call's
``DecodeStats`` (drafted layers, accepted prefix, main steps), never from constants, so a
tokenizer with another N or K changes the counts with it. Per pass (one sequential model call):

- ``positions``: sequence positions it computes per chunk (a main step 1, a verify pass k+1);
- ``flops``: 2 x multiply-adds of its matrix products per chunk (linear layers, attention scores
  and values over the cached positions, the per-layer heads) plus the code-embedding sums; a
  batch of B chunks does B times as many;
- ``weight_bytes``: parameters it reads (once per pass whatever the batch): every transformer
  block, the heads of the layers it predicts, the embedding rows of the codes it reads, the
  context projection ``Linear(H, d)`` in the call's first pass; times the bytes of the precision;
- ``kernels``: GPU kernel launches, estimated from the layer structure (the roofline's overhead).

Left out: LayerNorm/GELU arithmetic (a few per element), argmax and acceptance rules, the
tokenizer's decode (identical for settings decoding the same depth).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from rsdvla.decoding.adaptive import AdaptiveDepthDecoder
from rsdvla.decoding.draft_only import DraftOnlyDecoder
from rsdvla.decoding.main_only import MainOnlyDecoder
from rsdvla.decoding.speculative import SpeculativeDecoder

BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2}
KERNELS_PER_BLOCK = (
    12  # 2 LayerNorms, qkv, attention, out, fc1, GELU, fc2, 2 residual adds, 2 cache writes
)


@dataclass(frozen=True)
class PassCost:
    """One sequential model pass of a call: ``kind`` is ``draft``, ``verify`` or ``step``."""

    kind: str
    positions: int
    flops: float
    weight_params: float
    kernels: int
    bytes_per_param: int = 4

    @property
    def weight_bytes(self) -> float:
        return self.weight_params * self.bytes_per_param


def block_params(d: int) -> int:
    """Parameters of one pre-LN block (``blocks.Block``, MLP ratio 4): 12 d^2 weights + 13 d
    (qkv 3d, out d, fc1 4d, fc2 d biases; two LayerNorms 2d each)."""
    return 12 * d * d + 13 * d


def context_cost(cfg) -> tuple[float, float]:
    """``(flops, params)`` of main's context projection ``Linear(H, d)`` for one chunk."""
    return 2.0 * cfg.hidden_dim * cfg.d_model, cfg.hidden_dim * cfg.d_model + cfg.d_model


def main_pass(cfg, first: int, positions: int, kind: str, with_context: bool, bpp: int) -> PassCost:
    """A main-model pass over ``positions`` new positions after ``first`` cached ones.

    Position ``first + i`` predicts layer ``first + i``; positions > 0 embed the previous layer's
    N codes (position 0 is the context). ``with_context``: this pass computes ``ctx(h)``.
    """
    d, n, k = cfg.d_model, cfg.tokens_per_layer, cfg.levels
    embedded = positions - (1 if first == 0 else 0)  # layers whose codes are summed into a vector
    attended = sum(first + i + 1 for i in range(positions))  # keys each new query reads
    macs = positions * (cfg.n_layers * 12 * d * d + d * n * k)
    macs += cfg.n_layers * 2 * d * attended  # scores q.k and the weighted sum of values
    flops = 2.0 * macs + embedded * n * d
    params = cfg.n_layers * block_params(d) + 2 * d + d  # blocks, ln_f, the positions' row
    params += positions * (d * n * k + n * k) + embedded * n * d
    kernels = cfg.n_layers * KERNELS_PER_BLOCK + 4  # + embedding, position add, ln_f, head
    if with_context:
        c_flops, c_params = context_cost(cfg)
        flops, params, kernels = flops + c_flops, params + c_params, kernels + 4
    return PassCost(kind, positions, flops, params, kernels, bpp)


def tree_rows_pass(verify: PassCost, width: int) -> PassCost:
    """A verify pass over a draft tree of ``width`` rows per chunk: ``width`` times the positions
    and FLOPs, the same weights read once and the same kernels (one batched pass)."""
    if width == 1:
        return verify
    return PassCost(
        verify.kind,
        verify.positions * width,
        verify.flops * width,
        verify.weight_params,
        verify.kernels,
        verify.bytes_per_param,
    )


def draft_pass(
    cfg, context_draft: bool, main_cfg, k: int, with_context: bool, bpp: int
) -> PassCost:
    """The draft's one pass for ``k`` layers, from its config: a context draft's
    (``context_draft``, the module's ``reads_main_context``: a head on main's context, which this
    pass computes when ``with_context``) or a projected ``DraftModel``'s (a transformer on ``h``)."""
    n, levels = cfg.tokens_per_layer, cfg.levels
    if context_draft:
        d, hidden = cfg.context_dim, cfg.hidden
        width = hidden or d
        out = cfg.num_draft_layers * n * levels  # the head computes every drafted layer it has
        macs = (d * hidden if hidden else 0) + width * out
        params = 2 * d + (d * hidden + hidden if hidden else 0) + width * out + out
        flops, kernels = 2.0 * macs, 4
        if with_context:
            c_flops, c_params = context_cost(main_cfg)
            flops, params, kernels = flops + c_flops, params + c_params, kernels + 4
        return PassCost("draft", 0, flops, params, kernels, bpp)
    d, q = cfg.d_model, cfg.num_draft_layers
    macs = cfg.hidden_dim * d + q * (cfg.n_layers * 12 * d * d + d * n * levels)
    macs += cfg.n_layers * 2 * d * q * q  # bidirectional attention over the q queries
    params = cfg.hidden_dim * d + d + q * d + cfg.n_layers * block_params(d) + 2 * d
    params += q * (d * n * levels + n * levels)
    kernels = 5 + cfg.n_layers * (KERNELS_PER_BLOCK - 2) + 2
    flops = 2.0 * macs
    if with_context:  # RSD's start(h) computes main's context before the draft runs
        c_flops, c_params = context_cost(main_cfg)
        flops, params, kernels = flops + c_flops, params + c_params, kernels + 4
    return PassCost("draft", q, flops, params, kernels, bpp)


SIZE_FIELDS = ("hidden_dim", "d_model", "n_layers", "n_heads", "context_dim", "hidden")
"""Config fields that set a model's width and depth; the rest (``tokens_per_layer``, ``levels``,
``num_code_layers``, ``num_draft_layers``, ``tokenizer_family``) set its code space."""


def at_openvla_size(cfg):
    """``cfg`` with the widths of its class's defaults and its own code space: the models of the
    same tokenizer sized for OpenVLA-OFT (``MainConfig()``: H = 4096, a 512-wide 6-layer main;
    ``DraftConfig()``: a 4096 -> 512 one-layer draft; ``ContextDraftConfig()`` on main's 512-d
    context). A CPU-sized stack's measured acceptance, counted at these shapes, is what the same
    acceptance would cost at OpenVLA size (an assumption: acceptance carried over, not measured)."""
    defaults = type(cfg)()
    return replace(cfg, **{f: getattr(defaults, f) for f in SIZE_FIELDS if hasattr(cfg, f)})


def main_steps(cfg, first: int, last: int, bpp: int) -> list[PassCost]:
    """Single-position steps predicting layers ``first .. last - 1`` (step 0 computes ``ctx``)."""
    return [main_pass(cfg, j, 1, "step", j == 0, bpp) for j in range(first, last)]


def _speculated(stats) -> tuple[bool, bool]:
    """``(some rows drafted, some rows did not)`` of one call."""
    flag = stats.speculated
    if isinstance(flag, torch.Tensor):
        return bool(flag.any()), not bool(flag.all())
    return bool(flag), not bool(flag)


def call_passes(decoder, stats, precision: str = "float32", resize=None) -> list[PassCost]:
    """The sequential passes one call of ``decoder`` made, from its ``stats`` (in call order).

    main-only: ``depth`` steps; adaptive depth: ``stats.num_main_steps`` steps; draft-only: one
    draft pass; RSD: draft, verify over ``k + 1`` positions, then ``stats.num_main_steps`` steps
    up to its depth (a call whose rows did not draft, ``skip_below``, runs the main-only steps;
    a batch split between both runs both, one after the other). ``resize`` (e.g.
    :func:`at_openvla_size`) maps each model config before counting: the same call's passes at
    other model shapes.
    """
    bpp = check_precision(precision)
    resize = resize or (lambda cfg: cfg)
    cfg = resize(decoder.main.config)
    if isinstance(decoder, MainOnlyDecoder):
        return main_steps(cfg, 0, decoder.depth, bpp)
    if isinstance(decoder, AdaptiveDepthDecoder):
        return main_steps(cfg, 0, int(stats.num_main_steps), bpp)
    if isinstance(decoder, (DraftOnlyDecoder, SpeculativeDecoder)):
        draft_cfg = resize(decoder.draft.config)
        context_draft = getattr(decoder.draft, "reads_main_context", False)
    if isinstance(decoder, DraftOnlyDecoder):
        return [draft_pass(draft_cfg, context_draft, cfg, decoder.k, context_draft, bpp)]
    if isinstance(decoder, SpeculativeDecoder):
        depth = decoder.num_layers
        drafted, fallback = _speculated(stats)
        passes: list[PassCost] = []
        if drafted:
            steps = int(stats.num_main_steps)
            passes.append(draft_pass(draft_cfg, context_draft, cfg, decoder.k, True, bpp))
            verify = main_pass(cfg, 0, decoder.k + 1, "verify", False, bpp)
            passes.append(tree_rows_pass(verify, getattr(decoder, "tree_width", 1)))
            passes += main_steps(cfg, depth - steps, depth, bpp)
        if fallback:
            passes += main_steps(cfg, 0, depth, bpp)
        return passes
    raise TypeError(
        f"no cost model for {type(decoder).__name__}; add it to rsdvla/decoding/cost.py:call_passes"
    )


def check_precision(precision: str) -> int:
    if precision not in BYTES_PER_PARAM:
        raise ValueError(
            f"precision={precision!r} has no bytes per parameter in rsdvla/decoding/cost.py; "
            f"use one of {', '.join(BYTES_PER_PARAM)}"
        )
    return BYTES_PER_PARAM[precision]


def per_chunk(passes: list[PassCost], batch: int) -> dict:
    """Counts of one call per chunk: ``passes`` (sequential, and per kind), ``positions``,
    ``gflops`` (per chunk) and ``weight_mb`` (a pass reads its weights once for the batch)."""
    counts = {
        f"{kind}_passes": sum(p.kind == kind for p in passes)
        for kind in ("draft", "verify", "step")
    }
    return {
        "passes": len(passes),
        **counts,
        "positions": sum(p.positions for p in passes),
        "gflops": sum(p.flops for p in passes) / 1e9,
        "weight_mb": sum(p.weight_bytes for p in passes) / batch / 1e6,
    }


def mean_per_chunk(calls: list[list[PassCost]], batch: int) -> dict:
    """:func:`per_chunk` averaged over calls (each call a list of passes, ``batch`` chunks each)."""
    rows = [per_chunk(passes, batch) for passes in calls]
    return {key: sum(r[key] for r in rows) / len(rows) for key in rows[0]}
