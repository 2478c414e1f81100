"""ContextDraftModule: trains a :class:`ContextDraft` on a frozen main model's context state.

The main checkpoint (``teacher_ckpt``, required) provides both the input (its context state,
computed under ``no_grad``) and, by default, the targets (its greedy codes: what acceptance
compares with). ``train.py`` records that checkpoint's content hash in the lineage, and
``load_stack`` refuses to pair the draft with any other main.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rsdvla.decoding.compat import check_context_teacher
from rsdvla.models.context_draft import ContextDraft, ContextDraftConfig
from rsdvla.models.draft_module import DistilledHeadModule
from rsdvla.models.head_module import with_code_space_defaults


class ContextDraftModule(DistilledHeadModule):
    """``batch = {"hidden": [B, H], "tokens": [B, L, N]}``; loss over layers ``0..k-1``.

    Args:
        context_draft: ``ContextDraftConfig`` fields; ``context_dim`` null (default) takes the
            teacher's ``d_model``; a number must equal it.
        teacher_ckpt: the main checkpoint whose context the draft reads (``python train.py model=main``).
        targets: ``teacher`` (main's greedy codes, default) or ``data`` (the ground-truth codes).
    """

    TARGETS = ("teacher", "data")

    def __init__(
        self,
        context_draft: dict,
        optimizer: Callable,
        teacher_ckpt: str,
        scheduler: Callable | None = None,
        action_stats: dict | None = None,
        targets: str = "teacher",
    ):
        super().__init__(context_draft["num_draft_layers"], optimizer, scheduler)
        if targets not in self.TARGETS:
            raise ValueError(
                f"model.module.targets={targets!r} must be one of {self.TARGETS} (conf/model/context_draft.yaml)"
            )
        if not teacher_ckpt:
            raise ValueError(
                "model.module.teacher_ckpt is required: the main checkpoint whose context the draft reads "
                "(e.g. model.module.teacher_ckpt=outputs/artifacts/<data>/main.ckpt)"
            )
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.hparams["kind"] = "context_draft"
        teacher = self._load_teacher(teacher_ckpt)
        context_draft = with_code_space_defaults(context_draft, ContextDraftConfig)
        if context_draft.get("context_dim") is None:  # the width of the context it reads
            context_draft["context_dim"] = teacher.config.d_model
        self.hparams["context_draft"] = context_draft  # as resolved: what loading rebuilds
        self.model = ContextDraft(ContextDraftConfig(**context_draft))
        self.targets_from = targets
        check_context_teacher(teacher, self.model, teacher_ckpt)

    def on_fit_start(self) -> None:  # no input standardizer of its own: main's is used
        self.teacher.to(self.device)  # its context is the input, whichever the targets
        if self.targets_from == "teacher":
            self.add_teacher_targets()

    def logits(self, batch: dict) -> torch.Tensor:
        with torch.no_grad():
            ctx = self.teacher.context(batch["hidden"].float())
        return self.model(ctx)
