"""DraftModule: trains the draft (its 4096->512 projection included) on the coarse layers."""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsdvla.models.draft import DraftConfig, DraftModel
from rsdvla.models.head_module import CodeHeadModule


class DraftModule(CodeHeadModule):
    """``batch = {"hidden": [B, H], "tokens": [B, L, N]}``; loss over layers ``0..k-1``."""

    def __init__(
        self,
        draft: dict,
        optimizer: Callable,
        scheduler: Callable | None = None,
        action_stats: dict | None = None,
    ):
        super().__init__(draft["num_draft_layers"], optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams["kind"] = "draft"
        self.model = DraftModel(DraftConfig(**draft))

    def logits(self, batch: dict) -> torch.Tensor:
        return self.model(batch["hidden"])

    def targets(self, batch: dict) -> torch.Tensor:
        return batch["tokens"][:, : self.model.num_draft_layers]
