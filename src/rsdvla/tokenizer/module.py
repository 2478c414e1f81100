"""TokenizerModule: trains the RFSQ tokenizer on normalized action chunks."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanSquaredError

from rsdvla.optim import configure_optimizers
from rsdvla.tokenizer.metrics import CodeUsage
from rsdvla.tokenizer.rfsq import RFSQTokenizer, TokenizerConfig


class TokenizerModule(L.LightningModule):
    """Reconstruction loss on ``batch["actions"] [B, T, A]``.

    Logs ``train/loss``, ``val/loss``, ``val/mse_L0-{n}`` (decoding from the first n+1 layers),
    ``val/usage_L{l}`` and ``val/perplexity_L{l}`` (code usage per layer).
    """

    def __init__(
        self,
        tokenizer: dict,
        optimizer: Callable,
        scheduler: Callable | None = None,
        action_stats: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams["kind"] = "tokenizer"
        self.tokenizer = RFSQTokenizer(TokenizerConfig(**tokenizer))
        self.optimizer, self.scheduler = optimizer, scheduler
        cfg = self.tokenizer.config
        self.val_mse = nn.ModuleList(MeanSquaredError() for _ in range(cfg.num_layers))
        self.val_usage = CodeUsage(cfg.num_layers, cfg.levels)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        actions = batch["actions"]
        recon, _ = self.tokenizer(actions)
        loss = nn.functional.mse_loss(recon, actions)
        self.log("train/loss", loss, prog_bar=True)
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
