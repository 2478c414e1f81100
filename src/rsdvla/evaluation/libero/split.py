"""The offline held-out split: main's own (``val_fraction``/``seed`` from its checkpoint).

Shared by ``python evaluate.py env=offline`` and the frontier's offline pass.
"""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig, open_dict

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
