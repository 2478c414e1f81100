"""``python train.py model=...``: fit one model (tokenizer, main or draft) on a hidden-state store."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rsdvla.checkpoints import CheckpointError, check_tokenizer_matches
from rsdvla.cli import build

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list:
    """A config group of named ``_target_`` entries (callbacks, loggers) -> objects."""
    if not group:
        return []
    return [
        instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry
    ]


def _tokenizer_ckpt(cfg: DictConfig) -> str:
    path = Path(cfg.tokenizer.ckpt)
    if not path.exists():
        raise CheckpointError(
            f"{path}: tokenizer checkpoint not found (field `tokenizer.ckpt`); train it first with "
            f"`python train.py model=tokenizer data={cfg.data.name}` or set tokenizer.ckpt=<path>"
        )
    return str(path)


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a checkpoint to its published location atomically (temp name, then rename)."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return dst


def run(cfg: DictConfig) -> dict:
    """Train ``cfg.model`` on ``cfg.data``; returns the final metrics (floats) and the exported path."""
    L.seed_everything(cfg.seed, workers=True)
    model_cfg = cfg.model
    tokenizer_ckpt = _tokenizer_ckpt(cfg) if model_cfg.needs_tokens else None
    datamodule = build(
        cfg.data, tokenizer_ckpt=tokenizer_ckpt, load_hidden=model_cfg.needs_hidden, _convert_="all"
    )
    module = build(model_cfg.module, action_stats=datamodule.action_stats, _convert_="all")
    module.hparams["config"] = OmegaConf.to_container(cfg, resolve=True)  # checkpoints stand alone
    if tokenizer_ckpt is not None:
        from rsdvla.tokenizer import RFSQTokenizer

        check_tokenizer_matches(
            RFSQTokenizer.from_checkpoint(tokenizer_ckpt).config,
            module.model.config,
            tokenizer_ckpt,
            f"model.module.{model_cfg.name}",
        )
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = [
        c
        for c in _instantiate_all(cfg.get("callbacks"))
        if loggers
        or not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)  # it needs a logger
    ]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = next(
        (c for c in callbacks if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)), None
    )
    best = checkpoint and (checkpoint.best_model_path or checkpoint.last_model_path)
    if best and trainer.is_global_zero:
        metrics["exported"] = str(export_checkpoint(best, cfg.export))
        log.info("published %s -> %s", best, cfg.export)
    return metrics
