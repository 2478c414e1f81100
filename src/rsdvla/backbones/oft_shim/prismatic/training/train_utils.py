"""Action masks over OpenVLA-OFT's ``labels``, the two functions its ``modeling_prismatic.py`` imports.

Contract (what the model code relies on): ``labels`` is ``[B, L]`` int, ``IGNORE_INDEX`` wherever
nothing is supervised (BOS, patches, prompt), then the supervised tokens: the current action's
``ACTION_DIM`` tokens, the later actions of the chunk, and a stop token. Counting the supervised
positions of each row from 1, the *current* action is supervised positions 1..``ACTION_DIM`` and
the *next* actions are every later one; in both, only tokens above ``ACTION_TOKEN_BEGIN_IDX``
(action-token ids, not the stop token) are marked. Both return ``[B, L]`` bool.
"""

import torch
from prismatic.vla.constants import ACTION_DIM, ACTION_TOKEN_BEGIN_IDX, IGNORE_INDEX


def _supervised_rank(labels: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` -> ``[B, L]``: how many supervised labels the row has up to and including here."""
    return (labels != IGNORE_INDEX).long().cumsum(dim=1)


def _is_action_token(labels: torch.Tensor) -> torch.Tensor:
    return labels > ACTION_TOKEN_BEGIN_IDX


def get_current_action_mask(labels: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` labels -> ``[B, L]`` bool: action tokens among the first ``ACTION_DIM`` supervised ones."""
    rank = _supervised_rank(labels)
    in_first_action = (rank >= 1) & (rank <= ACTION_DIM)
    return in_first_action & _is_action_token(labels)


def get_next_actions_mask(labels: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` labels -> ``[B, L]`` bool: action tokens after the first ``ACTION_DIM`` supervised ones."""
    return (_supervised_rank(labels) > ACTION_DIM) & _is_action_token(labels)
