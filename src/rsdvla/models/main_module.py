"""MainModule: trains the depth-autoregressive main model with teacher forcing."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsdvla.models.head_module import CodeHeadModule, with_code_space_defaults
from rsdvla.models.main import MainConfig, MainModel


class MainModule(CodeHeadModule):
    """``batch = {"hidden": [B, H], "tokens": [B, L, N]}``; loss over all L layers."""

    def __init__(
        self,
        main: dict,
        optimizer: Callable,
        scheduler: Callable | None = None,
        action_stats: dict | None = None,
    ):
        main = with_code_space_defaults(main, MainConfig)
        super().__init__(main["num_code_layers"], optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams["kind"] = "main"
        self.hparams["main"] = main  # as built: what loading rebuilds
        self.model = MainModel(MainConfig(**main))

    def logits(self, batch: dict) -> torch.Tensor:
        return self.model(batch["hidden"], batch["tokens"].long())

    def targets(self, batch: dict) -> torch.Tensor:
        return batch["tokens"]
