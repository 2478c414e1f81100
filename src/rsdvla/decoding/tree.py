"""A draft tree of width n: the draft's n most probable first drafted layers, verified in one pass.

A layer is N tokens, and the draft's distribution over a layer factorizes over them, so the n
most probable whole layers are found by a beam of width n over the tokens (exact for a score that
is a sum over tokens: a top-n layer's prefix is always among the top-n prefixes). Candidate 0 is
the draft's argmax layer, so width 1 is ordinary RSD.
"""

from __future__ import annotations

import torch


def check_tree_width(width: int, tokens_per_layer: int, vocab: int) -> int:
    """``decoder.tree_width`` as an int in ``1..vocab ** tokens_per_layer`` (distinct layers)."""
    width = int(width)
    if width < 1:
        raise ValueError(
            f"decoder.tree_width={width} must be >= 1 (1: one drafted guess per layer)"
        )
    distinct = vocab**tokens_per_layer
    if width > distinct:
        raise ValueError(
            f"decoder.tree_width={width} exceeds the {distinct} distinct layers of a tokenizer with "
            f"{tokens_per_layer} token(s) of vocabulary {vocab}; set decoder.tree_width <= {distinct}"
        )
    return width


def top_layers(logits: torch.Tensor, width: int) -> torch.Tensor:
    """The ``width`` most probable layers under ``logits[B, N, K]`` (tokens independent):
    ``LongTensor[B, width, N]``, most probable first (candidate 0 is the argmax layer).

    Ties between equally probable layers are broken by the order ``topk`` returns.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # [B, N, K]
    b, n_tokens, vocab = logp.shape
    per_token = min(width, vocab)
    top_logp, top_index = logp.topk(per_token, dim=-1)  # [B, N, w'], sorted
    beams = top_index[:, 0, :, None]  # [B, w', 1]: layers over the first token
    scores = top_logp[:, 0]  # [B, w']
    for t in range(1, n_tokens):
        total = scores.unsqueeze(-1) + top_logp[:, t].unsqueeze(1)  # [B, beams, w']
        scores, flat = total.flatten(1).topk(min(width, total[0].numel()), dim=-1)
        parent, choice = flat // per_token, flat % per_token
        beams = torch.cat(
            [
                beams.gather(1, parent.unsqueeze(-1).expand(-1, -1, beams.shape[-1])),
                top_index[:, t].gather(1, choice).unsqueeze(-1),
            ],
            dim=-1,
        )
    if beams.shape[1] < width:  # only a width above K^N (check_tree_width refuses it) falls short
        raise ValueError(f"only {beams.shape[1]} distinct layers for tree width {width}")
    return beams[:, :width]


def tree_rows(drafted: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``drafted[B, k, N]`` with layer 0 replaced by each of ``candidates[B, n, N]``:
    ``[B * n, k, N]``, rows ``b * n + j`` (candidate j of sample b)."""
    b, n, _ = candidates.shape
    rows = drafted.unsqueeze(1).repeat(1, n, 1, 1)
    rows[:, :, 0] = candidates
    return rows.flatten(0, 1)


def best_candidates(accepted: torch.Tensor, width: int) -> torch.Tensor:
    """Per sample, the tree row with the most accepted layers (the first such, i.e. the most
    probable candidate among ties): ``accepted[B * n]`` -> row indices ``LongTensor[B]``."""
    per_sample = accepted.view(-1, width)
    # argmax returns the first maximal index: ties go to the draft's more probable candidate
    best = per_sample.argmax(dim=1)
    return torch.arange(per_sample.shape[0], device=accepted.device) * width + best
