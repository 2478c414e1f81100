"""One loader for every tokenizer family: a checkpoint records its family, the loader builds it."""

from __future__ import annotations

import os

from rsdvla.checkpoints import load_module
from rsdvla.tokenizer.family import read_family
from rsdvla.tokenizer.rfsq import RFSQTokenizer, TokenizerConfig
from rsdvla.tokenizer.rvq import ChunkRVQTokenizer, RVQConfig

FAMILIES = {"rfsq": (RFSQTokenizer, TokenizerConfig), "rvq": (ChunkRVQTokenizer, RVQConfig)}


def load_tokenizer(
    path: str | os.PathLike,
    map_location: str = "cpu",
    family: str | None = None,
    field: str = "ckpt.tokenizer",
) -> RFSQTokenizer | ChunkRVQTokenizer:
    """The tokenizer checkpoint at ``path``, of the family it records.

    ``family``: the family the caller requires (``rfsq`` | ``rvq``); another is refused in one
    line. Attributes as :func:`rsdvla.checkpoints.load_module` attaches them.
    """
    cls, config_cls = FAMILIES[read_family(path, family, field)]
    return load_module(
        cls, config_cls, path, kind="tokenizer", prefix="tokenizer", map_location=map_location
    )
