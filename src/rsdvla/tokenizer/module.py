"""TokenizerModule: trains an action tokenizer (RFSQ or chunk residual VQ) on normalized action chunks."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanSquaredError

from rsdvla.optim import configure_optimizers
from rsdvla.tokenizer.loading import FAMILIES
from rsdvla.tokenizer.metrics import CodeUsage


class TokenizerModule(L.LightningModule):
    """Reconstruction loss (plus the quantizer's own, e.g. VQ commitment) on ``batch["actions"] [B, T, A]``.

    ``family`` picks the tokenizer (``rfsq``: :class:`RFSQTokenizer`, ``rvq``:
    :class:`ChunkRVQTokenizer`); ``tokenizer`` holds its config fields. The checkpoint records
    the family, so :func:`rsdvla.tokenizer.load_tokenizer` rebuilds the right class.

    Logs ``train/loss``, ``val/loss``, ``val/mse_L0-{n}`` (decoding from the first n+1 layers),
    ``val/usage_L{l}`` and ``val/perplexity_L{l}`` (code usage per layer).
    """

    def __init__(
        self,
        tokenizer: dict,
        optimizer: Callable,
        scheduler: Callable | None = None,
        action_stats: dict | None = None,
        family: str = "rfsq",
    ):
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(
                f"model.module.family={family} is not a tokenizer family; use one of {' | '.join(FAMILIES)}"
            )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams["kind"] = "tokenizer"
        cls, config_cls = FAMILIES[family]
        self.tokenizer = cls(config_cls(**tokenizer))
        self.optimizer, self.scheduler = optimizer, scheduler
        tok = self.tokenizer
        self.val_mse = nn.ModuleList(MeanSquaredError() for _ in range(tok.num_layers))
        self.val_usage = CodeUsage(tok.num_layers, tok.levels)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        actions = batch["actions"]
        recon, _, aux = self.tokenizer.loss(actions)
        mse = nn.functional.mse_loss(recon, actions)
        loss = mse + aux
        self.log("train/loss", loss, prog_bar=True)
        if self.hparams.family != "rfsq":
            self.log("train/mse", mse)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        actions = batch["actions"]
        recon, codes = self.tokenizer(actions)
        self.log("val/loss", nn.functional.mse_loss(recon, actions), prog_bar=True)
        for n, metric in enumerate(self.val_mse):
            metric.update(self.tokenizer.decode(codes, num_layers=n + 1), actions)
        self.val_usage.update(codes)

    def on_validation_epoch_end(self) -> None:
        for n, metric in enumerate(self.val_mse):
            self.log(f"val/mse_L0-{n}", metric.compute())
            metric.reset()
        used, perplexity = self.val_usage.compute()
        for layer in range(len(used)):
            self.log(f"val/usage_L{layer}", used[layer])
            self.log(f"val/perplexity_L{layer}", perplexity[layer])
        self.val_usage.reset()

    def configure_optimizers(self):
        return configure_optimizers(self, self.optimizer, self.scheduler)
