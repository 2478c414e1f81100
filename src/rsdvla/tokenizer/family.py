"""Which tokenizer family a checkpoint holds (``hyper_parameters.family``), checked in one line."""

from __future__ import annotations

import os

from rsdvla.checkpoints import CheckpointError, read_checkpoint

PRODUCERS = {"rfsq": "model=tokenizer", "rvq": "model=tokenizer_rvq"}
"""Family -> the ``train.py`` model group that writes it."""


def checkpoint_family(ckpt: dict) -> str:
    """``hyper_parameters.family`` of a tokenizer checkpoint (``rfsq`` when not recorded)."""
    return str((ckpt.get("hyper_parameters") or {}).get("family", "rfsq"))


def read_family(
    path: str | os.PathLike, required: str | None = None, field: str = "ckpt.tokenizer"
) -> str:
    """The family of the tokenizer checkpoint at ``path``; ``required`` refuses another one."""
    found = checkpoint_family(read_checkpoint(path, "tokenizer", field=field))
    if found not in PRODUCERS:
        raise CheckpointError(
            f"{path}: field `hyper_parameters.family`={found} is not a tokenizer family "
            f"({' | '.join(PRODUCERS)}); retrain it with `python train.py model=tokenizer` or `model=tokenizer_rvq`"
        )
    if required is not None and found != required:
        raise CheckpointError(
            f"{path}: a {found} tokenizer (trained with `python train.py {PRODUCERS[found]}`) where a "
            f"{required} one is required (field `{field}`); point it at a {required} tokenizer checkpoint"
        )
    return found
