"""Tiny untrained tokenizer / main / draft checkpoints in the format ``python train.py`` writes.

The Lightning modules of ``train.py`` are built with tiny configs and saved as Lightning does:
``{"state_dict": module.state_dict(), "hyper_parameters": module.hparams}`` (the model config
under the kind, ``action_stats``, ``kind``), so ``*.from_checkpoint`` and ``load_stack`` read
them exactly as they read real ones.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_TOKENIZER = {
    "action_dim": 7,
    "chunk_size": 8,
    "latent_dim": 4,
    "num_layers": 4,
    "levels": 5,
    "hidden": 16,
    "depth": 1,
    "learn_scales": False,
}
TINY_ACTION_STATS = {
    "q01": [-0.5, -0.4, -0.3, -0.1, -0.1, -0.2, -1.0],
    "q99": [0.5, 0.4, 0.6, 0.1, 0.1, 0.2, 1.0],
    "mean": [0.0] * 7,
    "std": [1.0] * 7,
    "mask": [True] * 6 + [False],
}


def _save(module, path: Path, drop_stats: bool, lineage: dict | None = None) -> Path:
    """Save as Lightning does, with the lineage and content hash ``train.py`` records."""
    from rsdvla.checkpoints import stamp

    hparams = dict(module.hparams)
    if drop_stats:
        hparams.pop("action_stats", None)
    if lineage is not None:
        hparams["lineage"] = lineage
    torch.save(stamp({"state_dict": module.state_dict(), "hyper_parameters": hparams}), path)
    return path


def store_lineage(hidden_dim: int, backbone: str = "synthetic") -> dict:
    return {"path": "store.h5", "backbone": backbone, "hidden_dim": hidden_dim, "chunk_size": 8}


def write_tiny_checkpoints(
    folder: Path,
    hidden_dim: int,
    *,
    seed: int = 0,
    with_stats: bool = True,
    main_levels: int | None = None,
    lineage: bool = True,
    backbone: str = "synthetic",
    draft_backbone: str | None = None,
) -> dict[str, Path]:
    """Write ``tokenizer.ckpt``, ``main.ckpt``, ``draft.ckpt`` into ``folder``; returns their paths.

    ``with_stats=False`` drops ``action_stats`` from all three; ``main_levels`` gives the main
    model a different K than the tokenizer (a mismatch ``load_stack`` must reject).
    Main and draft record the tokenizer's content hash and a store of ``backbone`` (the draft's:
    ``draft_backbone``) as ``train.py`` does; ``lineage=False`` writes pre-lineage checkpoints.
    """
    from rsdvla.checkpoints import checkpoint_content_hash
    from rsdvla.models.draft_module import DraftModule
    from rsdvla.models.main_module import MainModule
    from rsdvla.tokenizer.module import TokenizerModule

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tok = TINY_TOKENIZER
    tokens = tok["chunk_size"] * tok["latent_dim"]
    levels = main_levels or tok["levels"]
    stats = TINY_ACTION_STATS
    common = {"optimizer": None, "action_stats": stats}
    main = {
        "hidden_dim": hidden_dim,
        "d_model": 32,
        "n_layers": 1,
        "n_heads": 2,
        "dropout": 0.0,
        "num_code_layers": tok["num_layers"],
        "tokens_per_layer": tokens,
        "levels": levels,
    }
    draft = {
        "hidden_dim": hidden_dim,
        "d_model": 32,
        "n_heads": 2,
        "n_layers": 1,
        "num_draft_layers": 2,
        "tokens_per_layer": tokens,
        "levels": tok["levels"],
        "dropout": 0.0,
    }
    paths = {
        "tokenizer": _save(
            TokenizerModule(tokenizer=dict(tok), **common),
            folder / "tokenizer.ckpt",
            not with_stats,
            {"store": store_lineage(hidden_dim, backbone)} if lineage else None,
        )
    }
    tok_lineage = {
        "path": str(paths["tokenizer"]),
        "content_hash": checkpoint_content_hash(paths["tokenizer"]),
    }

    def lineage_of(store_backbone: str) -> dict | None:
        if not lineage:
            return None
        return {"store": store_lineage(hidden_dim, store_backbone), "tokenizer": tok_lineage}

    paths["main"] = _save(
        MainModule(main=main, **common), folder / "main.ckpt", not with_stats, lineage_of(backbone)
    )
    paths["draft"] = _save(
        DraftModule(draft=draft, **common),
        folder / "draft.ckpt",
        not with_stats,
        lineage_of(draft_backbone or backbone),
    )
    return paths
