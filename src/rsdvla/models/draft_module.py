"""DraftModule: trains the draft (its 4096->512 projection included) on the coarse layers.

Targets are the ground-truth codes, or, with ``teacher_ckpt``, the greedy codes of a trained
main model (distillation): acceptance compares drafted layers with *main's* predictions, so a
draft that imitates main is accepted more often than one that imitates the data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsdvla.models.draft import DraftConfig, DraftModel
from rsdvla.models.head_module import CodeHeadModule, with_code_space_defaults
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


class DistilledHeadModule(CodeHeadModule):
    """A head over the first k layers that can learn a frozen main checkpoint's greedy codes.

    ``teacher_ckpt`` is loaded once (kept out of the module's state dict: it is not saved with
    the draft) and exposed as :attr:`teacher`; ``train.py`` reads its content hash from there.
    :meth:`add_teacher_targets` stores main's greedy codes per split as ``fields["teacher"]``,
    which :meth:`targets` prefers over the ground-truth ``tokens``.
    """

    def _load_teacher(self, teacher_ckpt: str | None) -> MainModel | None:
        self.teacher_ckpt = teacher_ckpt
        teacher = MainModel.from_checkpoint(teacher_ckpt) if teacher_ckpt else None
        if teacher is not None:
            teacher.requires_grad_(False)
        self._teacher = [teacher]  # a list: not a submodule, so not saved with the draft
        return teacher

    @property
    def teacher(self) -> MainModel | None:
        return self._teacher[0]

    def add_teacher_targets(self) -> None:
        """``fields["teacher"] = uint8[N, k, N_tok]`` of main's greedy codes for the train and val splits."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if self.teacher is None or datamodule is None:
            return
        teacher = self.teacher.to(self.device)
        for dataset in (datamodule.train_set, datamodule.val_set):
            hidden = dataset.fields["hidden"].to(self.device)
            k = self.model.num_draft_layers
            dataset.fields["teacher"] = greedy_layers(teacher, hidden, k).cpu()

    def targets(self, batch: dict) -> torch.Tensor:
        if "teacher" in batch:
            return batch["teacher"]
        return batch["tokens"][:, : self.model.num_draft_layers]


class DraftModule(DistilledHeadModule):
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
        draft = with_code_space_defaults(draft, DraftConfig)
        self.hparams["draft"] = draft  # as built: what loading rebuilds
        self.model = DraftModel(DraftConfig(**draft))
        teacher = self._load_teacher(teacher_ckpt)
        if teacher is not None:  # fail before training starts
            from rsdvla.decoding.compat import check_teacher

            check_teacher(teacher, self.model, teacher_ckpt)

    def on_fit_start(self) -> None:
        super().on_fit_start()  # the input standardizer
        self.add_teacher_targets()

    def logits(self, batch: dict) -> torch.Tensor:
        return self.model(batch["hidden"])
