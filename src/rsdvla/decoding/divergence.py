"""Where a decoder departs from main-only, chunk by chunk, at no extra model cost.

When an evaluation times main-only (``RSDPolicy(baseline=...)``) it decodes the same hidden
state ``h`` as the decoder; :func:`divergence_rows` compares the two results:

- ``token_match``: per residual layer of main-only's codes, the share of its tokens (RFSQ ``T*D``,
  RVQ ``G``) the decoder chose too (``None`` for layers the decoder did not decode: truncated or
  adaptive depth);
- ``max_abs_norm`` / ``max_abs_env``: the largest ``|a - a_main|`` over the executed chunk's arm
  dimensions (the first 6: position and rotation), in normalized and in env units;
- ``gripper_differs``: whether the env gripper command differs at any executed step.

The policy also records ``hidden_shift`` per chunk: ``||h_t - h_prev|| / ||h_prev||`` (L2, h of
the previous chunk of the same episode; ``None`` for the first chunk): how far the scene moved
in the backbone's eyes. :func:`episode_fields` turns an episode's chunk log into record fields.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ARM_DIMS = 6
"""Action dimensions compared by ``max_abs_*`` (the gripper, dim 6, by ``gripper_differs``)."""


def token_match_per_layer(
    codes: torch.Tensor, baseline_codes: torch.Tensor, decoded_layers: torch.Tensor | None = None
) -> list[list[float | None]]:
    """Codes ``[B, ..., m]`` vs main-only's ``[B, ..., L]`` (any tokenizer's layout with the layer
    last: RFSQ ``[B, T, D, L]``, RVQ ``[B, G, L]``) -> per row, per layer ``l < L``: share of
    main-only's tokens equal (``None`` where ``l >= m`` or ``l >= decoded_layers[b]``)."""
    b, layers = baseline_codes.shape[0], baseline_codes.shape[-1]
    depth = min(codes.shape[-1], layers)
    equal = codes[..., :depth] == baseline_codes[..., :depth]
    same = equal.reshape(b, -1, depth).float().mean(dim=1)  # [B, m]
    limits = (
        [depth] * b
        if decoded_layers is None
        else [min(depth, int(d)) for d in decoded_layers.reshape(-1).tolist()]
    )
    shares = same.cpu().tolist()
    return [
        [round(float(shares[r][j]), 6) if j < limits[r] else None for j in range(layers)]
        for r in range(b)
    ]


def divergence_rows(
    codes: torch.Tensor,
    baseline_codes: torch.Tensor,
    actions_norm: np.ndarray,
    baseline_norm: np.ndarray,
    actions_env: np.ndarray,
    baseline_env: np.ndarray,
    decoded_layers: torch.Tensor | None = None,
) -> list[dict]:
    """One dict per row ``b`` (keys in the module docstring).

    ``actions_norm``/``baseline_norm``: the executed chunks ``[B, C, 7]`` in normalized units;
    ``actions_env``/``baseline_env``: the same chunks as the env receives them ``[B, C, 7]``.
    """
    matches = token_match_per_layer(codes, baseline_codes, decoded_layers)
    norm = np.abs(np.asarray(actions_norm) - np.asarray(baseline_norm))[..., :ARM_DIMS]
    env = np.abs(np.asarray(actions_env) - np.asarray(baseline_env))[..., :ARM_DIMS]
    gripper = np.asarray(actions_env)[..., ARM_DIMS] != np.asarray(baseline_env)[..., ARM_DIMS]
    return [
        {
            "token_match": matches[r],
            "max_abs_norm": round(float(norm[r].max()), 6),
            "max_abs_env": round(float(env[r].max()), 6),
            "gripper_differs": bool(gripper[r].any()),
        }
        for r in range(len(matches))
    ]


def hidden_shift(h: torch.Tensor, previous: torch.Tensor | None) -> list[float | None]:
    """Per row of ``h [B, H]``: ``||h - previous|| / ||previous||`` (None without ``previous``)."""
    if previous is None or previous.shape != h.shape:
        return [None] * h.shape[0]
    diff = (h.float() - previous.float()).norm(dim=-1)
    base = previous.float().norm(dim=-1).clamp_min(1e-12)
    return [round(float(x), 6) for x in (diff / base).cpu().tolist()]


DIVERGENCE_KEYS = ("token_match", "max_abs_norm", "max_abs_env", "gripper_differs")


def episode_fields(chunk_log: Sequence) -> dict:
    """An episode's ``ChunkStats`` list -> record fields: ``divergence`` (``key -> [per chunk]``,
    only when a baseline ran: some chunk carries one) and ``hidden_shift`` (``[per chunk]``, only
    when recorded)."""
    fields: dict = {}
    divergences = [getattr(c, "divergence", None) for c in chunk_log]
    if any(d is not None for d in divergences):
        fields["divergence"] = {
            key: [None if d is None else d[key] for d in divergences] for key in DIVERGENCE_KEYS
        }
    shifts = [getattr(c, "hidden_shift", None) for c in chunk_log]
    if any(s is not None for s in shifts):
        fields["hidden_shift"] = shifts
    return fields
