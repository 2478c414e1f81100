"""``python evaluate.py env=offline|libero decoder=rsd|main_only``: evaluate a decoder."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from rsdvla.evaluation.stack import load_stack

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Load the checkpoints in ``cfg.ckpt`` and run the evaluation ``cfg.env.kind`` names."""
    kind = cfg.env.kind
    if kind not in ("offline", "libero"):
        raise ValueError(
            f"env.kind={kind!r}: choose env=offline (hidden-state store) or env=libero (simulator)"
        )
    if kind == "libero":  # check suite, task ids and shard before loading any model
        from rsdvla.evaluation.libero_runner import LiberoEvalSettings, LiberoRunner

        LiberoRunner(LiberoEvalSettings.from_config(cfg), cfg.paths.output_dir).plan()
    stack = load_stack(cfg)
    if kind == "offline":
        from rsdvla.evaluation.offline import run_offline

        return run_offline(cfg, stack)
    from rsdvla.evaluation.libero_runner import run_libero

    return run_libero(cfg, stack)
