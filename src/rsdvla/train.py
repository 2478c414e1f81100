"""``python train.py model=...``: fit one model (tokenizer, main or draft) on a hidden-state store."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rsdvla.checkpoints import (
    HASH_KEY,
    LINEAGE,
    MODEL_FIELD_NAMES,
    CheckpointError,
    check_store_backbone,
    check_store_content,
    check_tokenizer_matches,
    check_trained_with,
    checkpoint_kind,
    code_space,
    nonfinite_tensors,
    read_checkpoint,
    require_lineage,
    stamp,
    store_identity,
)
from rsdvla.cli import build, check_writable

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


class ContentHashCallback(L.Callback):
    """Stamps every checkpoint Lightning writes with its content hash (``rsdvla.checkpoints.stamp``)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        stamp(checkpoint)


class TrainingDivergedError(RuntimeError):
    """A loss or weight went NaN/inf: training stops, nothing is saved or published."""


class FiniteTrainingCallback(L.Callback):
    """Stops training (one line) when a loss or a weight goes non-finite; never saves such weights.

    Checks the training loss after every batch, ``val/loss`` after validation, and every tensor
    of a checkpoint before Lightning writes it, so neither ``checkpoints/`` nor the published
    ``export`` can receive a diverged model.
    """

    def __init__(self, export: str, lr) -> None:
        self.export, self.lr = export, lr

    def _stop(self, trainer, what: str) -> None:
        raise TrainingDivergedError(
            f"training diverged: {what} is non-finite at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; nothing was published ({self.export} unchanged); lower "
            f"model.module.optimizer.lr (now {self.lr}) or check data.path for NaN hidden states"
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if torch.is_tensor(loss) and not bool(torch.isfinite(loss).all()):
            self._stop(trainer, f"the training loss ({float(loss)})")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        for name, value in trainer.callback_metrics.items():
            if name.startswith("val/") and not bool(torch.isfinite(torch.as_tensor(value)).all()):
                self._stop(trainer, f"{name} ({float(value)})")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint["state_dict"])
        if bad:
            self._stop(trainer, f"weight `{bad[0]}` ({len(bad)} tensors)")


MODEL_CONFIG_KEYS = ("main", "draft", "context_draft")


def fill_code_space(cfg: DictConfig, tokenizer) -> None:
    """Set the model's unset (null) code-space fields from the tokenizer it trains on.

    ``tokens_per_layer`` (N), ``levels`` (the vocabulary), ``tokenizer_family`` and, for main,
    ``num_code_layers`` (L) come from the tokenizer, never from constants; a value set by hand is
    kept and checked against the tokenizer by :func:`record_lineage` (one line if it differs).
    """
    key = next((k for k in MODEL_CONFIG_KEYS if k in cfg.model.module), None)
    if key is None:
        return
    fields = cfg.model.module[key]
    # the tokenizer's code space under the names a model config uses (checkpoints.code_space)
    values = {MODEL_FIELD_NAMES.get(k, k): v for k, v in code_space(tokenizer).items()}
    for name, value in values.items():
        if name in fields and fields[name] is None:
            fields[name] = value


def record_lineage(cfg: DictConfig, module, datamodule, tokenizer_ckpt: str | None) -> dict:
    """``module.hparams["lineage"]``: the store's identity, the tokenizer's and teacher's hashes.

    Refuses (one line naming both files) a teacher trained on another backbone's store or with
    another tokenizer. Returns the lineage dict.
    """
    store = store_identity(datamodule.store)
    lineage: dict = {"store": store}
    tokenizer = None
    if tokenizer_ckpt is not None:
        from rsdvla.tokenizer import load_tokenizer

        tokenizer = getattr(datamodule, "tokenizer", None) or load_tokenizer(
            tokenizer_ckpt, field="tokenizer.ckpt"
        )
        check_tokenizer_matches(
            tokenizer.config, module.model.config, tokenizer_ckpt, f"model.module.{cfg.model.name}"
        )
        lineage["tokenizer"] = {"path": str(tokenizer_ckpt), HASH_KEY: tokenizer.content_hash}
    teacher_ckpt = cfg.model.module.get("teacher_ckpt")
    if teacher_ckpt:
        from rsdvla.models import MainModel

        teacher = getattr(module, "teacher", None) or MainModel.from_checkpoint(teacher_ckpt)
        teacher_store = require_lineage(teacher, "main").get("store") or {}
        check_store_backbone(
            teacher_store,
            store["backbone"],
            store["hidden_dim"],
            f"{teacher_ckpt}: teacher main (model.module.teacher_ckpt)",
            f"data.path={store['path']}",
            "distill from a main trained on this store's backbone, or re-extract the store with its settings",
        )
        check_store_content(
            teacher_store,
            datamodule.store,
            f"{teacher_ckpt}: teacher main (model.module.teacher_ckpt)",
            "data.path",
            "distill from a main trained on this store (data.path), or point data.path at the teacher's store",
        )
        if tokenizer is not None:
            check_trained_with(
                teacher,
                "main",
                "tokenizer",
                tokenizer_ckpt,
                tokenizer.content_hash,
                "tokenizer.ckpt",
            )
        lineage["teacher"] = {"path": str(teacher_ckpt), HASH_KEY: teacher.content_hash}
    module.hparams[LINEAGE] = lineage
    return lineage


SPLIT_FIELDS = ("val_fraction", "seed")


def check_resume(
    path: str,
    kind: str,
    lineage: dict,
    cfg: DictConfig | None = None,
    data_store=None,
    model_config: dict | None = None,
) -> None:
    """``ckpt_path`` must be a readable checkpoint of the same kind, store (backbone and content),
    split (``data.val_fraction``, ``data.seed``) and tokenizer: the split is a checkpoint's
    identity, so a resume cannot move trained episodes into the held-out set."""
    ckpt = read_checkpoint(path, kind, field="ckpt_path")
    found = checkpoint_kind(ckpt)
    if found != kind:
        raise CheckpointError(
            f"{path}: ckpt_path is a {found} checkpoint but this run trains model={kind}; "
            f"pass a {kind} run's checkpoints/last.ckpt or drop ckpt_path"
        )
    recorded = (ckpt.get("hyper_parameters") or {}).get(LINEAGE) or {}
    if recorded.get("store"):
        store = lineage["store"]
        check_store_backbone(
            recorded["store"],
            store["backbone"],
            store["hidden_dim"],
            f"{path}: ckpt_path",
            f"data.path={store['path']}",
            "resume with the store the run started on, or drop ckpt_path",
        )
        if data_store is not None:
            check_store_content(
                recorded["store"],
                data_store,
                f"{path}: ckpt_path",
                "data.path",
                "resume with the store the run started on, or drop ckpt_path to start a new run",
            )
    theirs_model = (ckpt.get("hyper_parameters") or {}).get(kind)
    mine_model = model_config or {}
    if isinstance(theirs_model, dict):
        for field in sorted({*theirs_model, *mine_model}):
            if theirs_model.get(field) != mine_model.get(field):
                raise CheckpointError(
                    f"{path}: ckpt_path was trained with model.module.{kind}.{field}={theirs_model.get(field)} but "
                    f"this run has {mine_model.get(field)} (another model config, e.g. model=main vs main_cpu); "
                    "resume with the model settings the run started with, or drop ckpt_path"
                )
    data = ((ckpt.get("hyper_parameters") or {}).get("config") or {}).get("data") or {}
    if cfg is not None:
        for field in SPLIT_FIELDS:
            if field in data and cfg.data.get(field) != data[field]:
                raise CheckpointError(
                    f"data.{field}={cfg.data.get(field)} but ckpt_path {path} was started with "
                    f"data.{field}={data[field]}: the split is part of a run (another split would move "
                    f"trained episodes into the held-out set); resume with data.{field}={data[field]}, "
                    "or drop ckpt_path to start a new run"
                )
    mine = (lineage.get("tokenizer") or {}).get(HASH_KEY)
    theirs = (recorded.get("tokenizer") or {}).get(HASH_KEY)
    if mine and theirs and mine != theirs:
        raise CheckpointError(
            f"{path}: ckpt_path was trained with tokenizer {recorded['tokenizer'].get('path')} but tokenizer.ckpt="
            f"{lineage['tokenizer']['path']} differs; resume with the same tokenizer.ckpt or drop ckpt_path"
        )


def check_validation(cfg: DictConfig, datamodule) -> None:
    """The published checkpoint is chosen on ``val/*``: refuse a split without held-out episodes,
    a trainer that never validates, and a run that trains no epoch."""
    trainer = cfg.trainer
    if trainer.get("max_epochs") is not None and int(trainer.max_epochs) == 0:
        raise ValueError(
            "trainer.max_epochs=0 trains nothing and publishes nothing; set trainer.max_epochs>=1 "
            "(or -1 with trainer.max_steps)"
        )
    for field in ("limit_val_batches", "max_steps"):
        value = trainer.get(field)
        if value is not None and not isinstance(value, bool) and float(value) == 0:
            what = "never validates" if field == "limit_val_batches" else "trains nothing"
            raise ValueError(
                f"trainer.{field}={value} {what}, so the published checkpoint would be unvalidated; "
                f"drop trainer.{field} or set it > 0 (e.g. 1.0)"
            )
    datamodule.setup("fit")
    if len(datamodule.val_set) == 0:
        raise ValueError(
            f"data.val_fraction={cfg.data.val_fraction} leaves no validation episodes in {cfg.data.path}, "
            "so the published checkpoint would be unvalidated; set data.val_fraction in (0, 1) (e.g. 0.1)"
        )


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
    if OmegaConf.is_missing(cfg.data, "path"):
        raise ValueError(
            f"data.path is not set (conf/data/{cfg.data.name}.yaml); pass data.path=<store.h5> written by "
            "`python extract.py`"
        )
    check_writable(  # before training, not after it
        cfg.export, "export", "cannot be published after training (set by paths.artifacts_dir)"
    )
    L.seed_everything(cfg.seed, workers=True)
    model_cfg = cfg.model
    tokenizer_ckpt = _tokenizer_ckpt(cfg) if model_cfg.needs_tokens else None
    datamodule = build(
        cfg.data, tokenizer_ckpt=tokenizer_ckpt, load_hidden=model_cfg.needs_hidden, _convert_="all"
    )
    if tokenizer_ckpt is not None:
        fill_code_space(cfg, datamodule.tokenizer)
    module = build(model_cfg.module, action_stats=datamodule.action_stats, _convert_="all")
    module.hparams["config"] = OmegaConf.to_container(cfg, resolve=True)  # checkpoints stand alone
    lineage = record_lineage(cfg, module, datamodule, tokenizer_ckpt)
    if cfg.get("ckpt_path"):
        kind = module.hparams["kind"]
        check_resume(
            str(cfg.ckpt_path), kind, lineage, cfg, datamodule.store, module.hparams.get(kind)
        )
    check_validation(cfg, datamodule)
    loggers = _instantiate_all(cfg.get("logger"))
    callbacks = [
        c
        for c in _instantiate_all(cfg.get("callbacks"))
        if loggers
        or not isinstance(c, L.pytorch.callbacks.LearningRateMonitor)  # it needs a logger
    ] + [
        FiniteTrainingCallback(cfg.export, cfg.model.module.get("optimizer", {}).get("lr")),
        ContentHashCallback(),
    ]
    # the datamodule shards its own batches per rank (HiddenStateDataModule._loader)
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, use_distributed_sampler=False
    )
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
