"""``python evaluate.py [env=libero|offline] decoder=rsd|main_only``: evaluate a decoder."""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig, OmegaConf, open_dict

from rsdvla.evaluation.stack import load_stack

log = logging.getLogger(__name__)

SPLIT_FIELDS = ("val_fraction", "seed")


def trained_split(model) -> dict | None:
    """``{"path", "val_fraction", "seed"}`` of the data config recorded in a checkpoint (None if absent)."""
    data = (getattr(model, "train_config", None) or {}).get("data") or {}
    if not all(k in data for k in SPLIT_FIELDS):
        return None
    path = data.get("path")  # "./outputs/x.h5" and "outputs/x.h5" name one store
    return {"path": os.path.normpath(path) if path else path, **{k: data[k] for k in SPLIT_FIELDS}}


def use_trained_split(cfg: DictConfig, stack) -> None:
    """The offline held-out split is main's own: ``data.val_fraction``/``data.seed`` come from main's
    checkpoint, and a draft trained on another split is refused (its training episodes could be
    main's held-out ones). Also refuses a store of another backbone than main's."""
    from rsdvla.checkpoints import CheckpointError, check_store_backbone, check_store_content
    from rsdvla.data.store import HiddenStateStore

    store = HiddenStateStore(cfg.data.path)
    recorded_store = (stack.main.lineage or {}).get("store") or {}
    check_store_backbone(
        recorded_store,
        store.backbone,
        store.hidden_dim,
        f"{cfg.ckpt.main}: main",
        f"data.path={cfg.data.path}",
        "evaluate on a store extracted with the backbone settings main was trained on",
    )
    chunk = recorded_store.get("chunk_size")
    if chunk is not None and int(chunk) != int(store.chunk_shape[0]):
        raise CheckpointError(
            f"data.path={cfg.data.path}: action chunks of {store.chunk_shape[0]} steps but {cfg.ckpt.main}: main "
            f"was trained on chunks of {chunk}; evaluate on a store extracted with chunk_size={chunk}"
        )
    check_store_content(
        recorded_store,
        store,
        f"{cfg.ckpt.main}: main",
        f"data.path={cfg.data.path}",
        "evaluate on the store main was trained on (its held-out split and normalization are that store's)",
    )
    split = trained_split(stack.main)
    if split is None:
        return
    changed = {k: (cfg.data[k], split[k]) for k in SPLIT_FIELDS if cfg.data.get(k) != split[k]}
    if changed:
        log.info(
            "held-out split from %s: %s",
            cfg.ckpt.main,
            ", ".join(f"data.{k}={new} (config said {old})" for k, (old, new) in changed.items()),
        )
    with open_dict(cfg):
        for k in SPLIT_FIELDS:
            cfg.data[k] = split[k]
    draft_split = trained_split(stack.draft) if stack.draft is not None else None
    if cfg.env.get("split", "val") != "all" and draft_split is not None:
        if any(draft_split[k] != split[k] for k in ("path", *SPLIT_FIELDS)):
            raise CheckpointError(
                f"{cfg.ckpt.draft}: draft was trained on split {draft_split} but {cfg.ckpt.main}: main on "
                f"{split}, so held-out episodes of one may be training episodes of the other; retrain the "
                "draft on main's store and split, or evaluate with env.split=all"
            )
    if split["path"] and split["path"] != os.path.normpath(str(cfg.data.path)):
        log.warning(
            "data.path=%s is not the store main was trained on (%s); the split is main's by episode id",
            cfg.data.path,
            split["path"],
        )


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
        from rsdvla.evaluation.libero_runner import LiberoEvalSettings, LiberoRunner

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
    from rsdvla.evaluation.libero_runner import check_training_states, run_libero

    settings = LiberoEvalSettings.from_config(cfg)
    for kind, model in (("main", stack.main), ("draft", stack.draft)):
        if model is not None:  # no episode starts where the heads' training demos started
            store = (getattr(model, "lineage", None) or {}).get("store") or {}
            check_training_states(settings, store, str(cfg.ckpt[kind]))
    return run_libero(cfg, stack)
