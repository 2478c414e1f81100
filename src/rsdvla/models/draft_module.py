"""DraftModule: trains the draft (its 4096->512 projection included) on the coarse layers.

Targets are the ground-truth codes, or, with ``teacher_ckpt``, the greedy codes of a trained
main model (distillation): acceptance compares drafted layers with *main's* predictions, so a
draft that imitates main is accepted more often than one that imitates the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsdvla.models.draft import DraftConfig, DraftModel
from rsdvla.models.head_module import CodeHeadModule
from rsdvla.models.main import MainModel


@torch.no_grad()
def greedy_layers(
    main: MainModel, hidden: torch.Tensor, num_layers: int, batch_size: int = 4096
) -> torch.Tensor:
    """Main's greedy codes for the first ``num_layers`` layers: ``hidden[N, H]`` -> ``uint8[N, num_layers, N_tok]``."""
    from rsdvla.decoding.main_loop import decode_steps, new_layers

    out = []
    for h in hidden.split(batch_size):
        h = h.float()
        layers = new_layers(h.shape[0], num_layers, main.config.tokens_per_layer, h.device)
        out.append(decode_steps(main, main.start(h), layers, 0, num_layers).to(torch.uint8))
    return torch.cat(out)


class DraftModule(CodeHeadModule):
    """``batch = {"hidden": [B, H], "tokens": [B, L, N]}``; loss over layers ``0..k-1``.

    Args:
        teacher_ckpt: a main checkpoint (``python train.py model=main``) whose greedy codes become
            the targets; ``val/acc_L{l}`` then measures agreement with main (what acceptance needs).
    """

    def __init__(
        self,
        draft: dict,
        optimizer: Callable,
        scheduler: Callable | None = None,
        action_stats: dict | None = None,
        teacher_ckpt: str | None = None,
    ):
        super().__init__(draft["num_draft_layers"], optimizer, scheduler)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams["kind"] = "draft"
        self.model = DraftModel(DraftConfig(**draft))
        self.teacher_ckpt = teacher_ckpt
        if teacher_ckpt is not None:  # fail before training starts
            self._check_teacher(MainModel.from_checkpoint(teacher_ckpt))

    def _check_teacher(self, teacher: MainModel) -> None:
        from rsdvla.decoding.compat import check_teacher

        check_teacher(teacher, self.model, self.teacher_ckpt)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.teacher_ckpt is None or datamodule is None:
            return
        teacher = MainModel.from_checkpoint(self.teacher_ckpt).to(self.device)
        cfg = self.model.config
        for dataset in (datamodule.train_set, datamodule.val_set):
            hidden = dataset.fields["hidden"].to(self.device)
            dataset.fields["teacher"] = greedy_layers(teacher, hidden, cfg.num_draft_layers).cpu()

    def logits(self, batch: dict) -> torch.Tensor:
        return self.model(batch["hidden"])

    def targets(self, batch: dict) -> torch.Tensor:
        if "teacher" in batch:
            return batch["teacher"]
        return batch["tokens"][:, : self.model.num_draft_layers]
