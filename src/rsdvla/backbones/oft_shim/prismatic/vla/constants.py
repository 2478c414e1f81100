# From moojink/openvla-oft@213c5ff8 prismatic/vla/constants.py (MIT License, Copyright (c) 2025
# Moo Jin Kim, Chelsea Finn, Percy Liang), reduced to the LIBERO constants. The original picks
# LIBERO / ALOHA / BRIDGE from words in sys.argv (defaulting to LIBERO) and prints them; the LIBERO
# checkpoints this project loads use LIBERO's, so they are fixed here.
"""Important constants for VLA training and evaluation (LIBERO)."""

from enum import Enum

# Llama 2 token constants
IGNORE_INDEX = -100
ACTION_TOKEN_BEGIN_IDX = 31743
STOP_INDEX = 2  # '</s>'


class NormalizationType(str, Enum):
    NORMAL = "normal"  # Normalize to Mean = 0, Stdev = 1
    BOUNDS = "bounds"  # Normalize to Interval = [-1, 1]
    BOUNDS_Q99 = "bounds_q99"  # Normalize [quantile_01, ..., quantile_99] --> [-1, ..., 1]


LIBERO_CONSTANTS = {
    "NUM_ACTIONS_CHUNK": 8,
    "ACTION_DIM": 7,
    "PROPRIO_DIM": 8,
    "ACTION_PROPRIO_NORMALIZATION_TYPE": NormalizationType.BOUNDS_Q99,
}
ROBOT_PLATFORM = "LIBERO"
constants = LIBERO_CONSTANTS

NUM_ACTIONS_CHUNK = constants["NUM_ACTIONS_CHUNK"]
ACTION_DIM = constants["ACTION_DIM"]
PROPRIO_DIM = constants["PROPRIO_DIM"]
ACTION_PROPRIO_NORMALIZATION_TYPE = constants["ACTION_PROPRIO_NORMALIZATION_TYPE"]
