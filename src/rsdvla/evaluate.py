"""``python evaluate.py [env=libero|offline] decoder=rsd|main_only``: evaluate a decoder."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from rsdvla.evaluation.libero.split import use_trained_split
from rsdvla.evaluation.stack import load_stack

log = logging.getLogger(__name__)


def check_offline_settings(env: DictConfig) -> None:
    """``env.batch_size``/``env.max_batches`` >= 1 (max_batches may be null), ``env.warmup`` >= 0."""
    for field, low in (("batch_size", 1), ("max_batches", 1), ("warmup", 0)):
        value = env.get(field)
        if value is None and field == "max_batches":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            extra = " or null for the whole split" if field == "max_batches" else ""
            raise ValueError(
                f"env.{field}={value!r} (conf/env/offline.yaml): must be an integer >= {low}{extra}"
            )


def run(cfg: DictConfig) -> dict:
    """Load the checkpoints in ``cfg.ckpt`` and run the evaluation ``cfg.env.kind`` names."""
    if cfg.get("frontier") is not None:  # python evaluate.py experiment=frontier
        from rsdvla.evaluation.frontier import run_frontier

        return run_frontier(cfg)
    kind = cfg.env.kind
    if kind not in ("offline", "libero"):
        raise ValueError(
            f"env.kind={kind!r}: choose env=libero (simulator, the default) or env=offline (hidden-state store)"
        )
    if kind == "libero":  # check suite, task ids, shard and run dir before loading any model
        from rsdvla.evaluation.libero.runner import LiberoEvalSettings, LiberoRunner

        LiberoRunner(LiberoEvalSettings.from_config(cfg), cfg.paths.output_dir).plan()
    else:
        check_offline_settings(cfg.env)
        if OmegaConf.is_missing(cfg.data, "path"):
            raise ValueError(
                f"data.path is not set (conf/data/{cfg.data.name}.yaml); env=offline reads held-out episodes "
                "from a store: pass data.path=<store.h5>"
            )
    stack = load_stack(cfg)
    if kind == "offline":
        from rsdvla.evaluation.offline import run_offline

        use_trained_split(cfg, stack)
        return run_offline(cfg, stack)
    from rsdvla.evaluation.libero.runner import check_training_states, run_libero

    settings = LiberoEvalSettings.from_config(cfg)
    for kind, model in (("main", stack.main), ("draft", stack.draft)):
        if model is not None:  # no episode starts where the heads' training demos started
            store = (getattr(model, "lineage", None) or {}).get("store") or {}
            check_training_states(settings, store, str(cfg.ckpt[kind]))
    return run_libero(cfg, stack)
