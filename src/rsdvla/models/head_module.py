"""Shared training logic for models that predict RFSQ layer tokens (main and draft)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from rsdvla.optim import configure_optimizers

CODE_SPACE_FIELDS = ("num_code_layers", "tokens_per_layer", "levels", "tokenizer_family")


def with_code_space_defaults(fields: dict, config_cls) -> dict:
    """A model's config fields with unset (None) code-space fields at ``config_cls``'s defaults.

    ``train.py`` fills them from the tokenizer it trains on (:func:`rsdvla.train.fill_code_space`);
    the defaults only serve a model built without one (a config check, a test).
    """
    defaults = config_cls()
    return {
        k: getattr(defaults, k) if v is None and k in CODE_SPACE_FIELDS else v
        for k, v in fields.items()
    }


class CodeHeadModule(L.LightningModule):
    """Cross-entropy over layer tokens; per-layer token accuracy as ``{stage}/acc_L{l}``.

    Subclasses set ``self.model`` and implement ``logits(batch) -> [B, layers, N, K]`` and
    ``targets(batch) -> [B, layers, N]``.
    """

    kind = "head"

    def __init__(self, num_layers: int, optimizer: Callable, scheduler: Callable | None):
        super().__init__()
        self.optimizer, self.scheduler = optimizer, scheduler
        self.acc = nn.ModuleDict(
            {
                f"{stage}_acc": nn.ModuleList(MeanMetric() for _ in range(num_layers))
                for stage in ("train", "val")
            }
        )

    def on_fit_start(self) -> None:
        """Fix the input standardization from the training split (a resumed run keeps its own)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if (
            self.trainer.ckpt_path is None
            and datamodule is not None
            and datamodule.train_set is not None
        ):
            self.model.input_norm.set_statistics(datamodule.train_set.fields["hidden"])

    def logits(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def targets(self, batch: dict) -> torch.Tensor:
        raise NotImplementedError

    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        logits, targets = self.logits(batch), self.targets(batch).long()
        loss = F.cross_entropy(logits.flatten(0, 2), targets.flatten())
        correct = (logits.argmax(-1) == targets).float().mean(dim=(0, 2))  # [layers]
        for layer, metric in enumerate(self.acc[f"{stage}_acc"]):
            metric.update(correct[layer], weight=targets.shape[0])
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=stage == "train", on_epoch=True)
        return loss

    def _log_accuracy(self, stage: str) -> None:
        for layer, metric in enumerate(self.acc[f"{stage}_acc"]):
            self.log(
                f"{stage}/acc_L{layer}", metric.compute(), prog_bar=stage == "val" and layer < 3
            )
            metric.reset()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_train_epoch_end(self) -> None:
        self._log_accuracy("train")

    def on_validation_epoch_end(self) -> None:
        self._log_accuracy("val")

    def configure_optimizers(self):
        return configure_optimizers(self, self.optimizer, self.scheduler)
