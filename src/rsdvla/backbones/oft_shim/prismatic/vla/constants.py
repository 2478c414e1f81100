"""The LIBERO constants OpenVLA-OFT's model code reads from ``prismatic.vla.constants``.

Facts of the published LIBERO checkpoints (moojink/openvla-oft@213c5ff8): an action chunk of 8
steps of 7 dimensions, an 8-dimensional proprio state, actions and proprio normalised to
[-1, 1] between their 1st and 99th percentiles, Llama 2 token ids. The upstream module chooses
among robot platforms from the command line; this project loads only LIBERO checkpoints, so the
values are fixed.
"""

from enum import Enum

IGNORE_INDEX = -100  # label of an unsupervised position
ACTION_TOKEN_BEGIN_IDX = 31743  # token ids above this one are action tokens
STOP_INDEX = 2  # Llama 2's '</s>'

NUM_ACTIONS_CHUNK = 8
ACTION_DIM = 7
PROPRIO_DIM = 8


class NormalizationType(str, Enum):
    """How actions and proprio are mapped to [-1, 1] (the model code compares against these)."""

    NORMAL = "normal"  # zero mean, unit standard deviation
    BOUNDS = "bounds"  # min / max -> -1 / 1
    BOUNDS_Q99 = "bounds_q99"  # 1st / 99th percentile -> -1 / 1


ACTION_PROPRIO_NORMALIZATION_TYPE = NormalizationType.BOUNDS_Q99
