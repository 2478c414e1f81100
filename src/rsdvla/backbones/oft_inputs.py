"""OpenVLA-OFT's language-model inputs for one forward pass, batched, and the pooling of its output.

``OpenVLAForActionPrediction.predict_action`` (moojink/openvla-oft@213c5ff8, batch size 1) builds::

    input_ids = [BOS, prompt..., 29871] + [1] * (ACTION_DIM * NUM_ACTIONS_CHUNK) + [STOP_INDEX]
    labels    = [IGNORE] * len(prompt ids)  + [ACTION_TOKEN_BEGIN_IDX + 1] * 56      + [STOP_INDEX]

zeroes the embeddings of the 56 placeholders (the action mask comes from ``labels``), inserts
the projected patches (then the proprio token, if any) after BOS, runs the Llama, and its action
head reads the last-layer states at positions ``NUM_PATCHES + NUM_PROMPT_TOKENS`` onwards, 56 of
them (``NUM_PROMPT_TOKENS`` = prompt ids after BOS, 29871 included). That window starts at the
last prompt token: as at training time, the state *before* each action token is the one read.

Here several prompts are right-padded after their stop token (each row keeps its own layout) and
``attention_mask_4d`` makes a ``[B, 1, L, L]`` boolean mask that masks only padding keys
(``bidirectional``, what the fine-tuned models were trained with) or also future keys (``causal``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

IGNORE_INDEX = -100
PLACEHOLDER_ACTION_TOKEN_ID = (
    1  # predict_action's torch.ones placeholders (their embeddings are zeroed)
)


@dataclass(frozen=True)
class ActionSlotInputs:
    """Right-padded token inputs ``[B, L]`` and each row's prompt length (tokens after BOS)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    prompt_tokens: torch.Tensor  # [B] NUM_PROMPT_TOKENS per row


def build_action_inputs(
    prompts: Sequence[Sequence[int]],
    pad_token_id: int,
    num_action_tokens: int,
    stop_token_id: int,
    action_label_id: int,
) -> ActionSlotInputs:
    """Prompt ids (each with BOS, ending in 29871) -> OFT's inputs, right-padded.

    ``num_action_tokens=0`` gives the prompt alone (no placeholders, no stop token, all labels ignored).
    """
    rows, labels = [], []
    for ids in prompts:
        ids = [int(i) for i in ids]
        if num_action_tokens:
            extra = [PLACEHOLDER_ACTION_TOKEN_ID] * num_action_tokens + [int(stop_token_id)]
            label = (
                [IGNORE_INDEX] * len(ids)
                + [int(action_label_id)] * num_action_tokens
                + [int(stop_token_id)]
            )
        else:
            extra, label = [], [IGNORE_INDEX] * len(ids)
        rows.append(ids + extra)
        labels.append(label)
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), int(pad_token_id), dtype=torch.long)
    label_ids = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (ids, label) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        label_ids[i, : len(ids)] = torch.tensor(label)
        attention_mask[i, : len(ids)] = 1
    prompt_tokens = torch.tensor([len(ids) - 1 for ids in prompts], dtype=torch.long)
    return ActionSlotInputs(input_ids, attention_mask, label_ids, prompt_tokens)


def attention_mask_4d(attention_mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """Key-padding mask ``[B, L]`` (1 = token) -> boolean ``[B, 1, L, L]``, True where query i may attend key j.

    ``causal=False``: every query attends every non-padding key (bidirectional). ``causal=True``: only keys
    ``j <= i``. transformers' Llama (4.40) takes a 4-D mask as given, replacing its causal mask.
    """
    keys = attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]
    length = attention_mask.shape[1]
    mask = keys.expand(-1, 1, length, -1)
    if causal:
        lower = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
        mask = mask & lower
    return mask


def action_slot_states(
    hidden: torch.Tensor, num_patches: int, prompt_tokens: torch.Tensor, num_slots: int
) -> torch.Tensor:
    """Last-layer ``hidden [B, S, H]`` -> what OFT's action head reads ``[B, num_slots, H]``.

    Row b: positions ``num_patches + prompt_tokens[b]`` .. ``+ num_slots - 1`` (``num_patches`` counts the
    proprio token when there is one).
    """
    starts = num_patches + prompt_tokens.to(hidden.device)
    index = starts[:, None] + torch.arange(num_slots, device=hidden.device)[None, :]
    return hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))


def normalize_proprio(proprio: np.ndarray, stats: Mapping) -> np.ndarray:
    """OpenVLA-OFT's ``normalize_proprio`` (BOUNDS_Q99): ``[B, D]`` -> clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1)."""
    low, high = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    mask = stats.get("mask", np.ones_like(low, dtype=bool))
    scaled = np.where(mask, 2 * (proprio - low) / (high - low + 1e-8) - 1, proprio)
    return np.clip(scaled, a_min=-1.0, a_max=1.0)
