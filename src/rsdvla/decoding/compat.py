"""Checks that a main model, a tokenizer and a draft model fit together (fail early, say the fix).

The comparisons themselves live in one place, :func:`rsdvla.checkpoints.check_same`, shared by
``train.py`` (tokenizer vs the model being trained), the draft's teacher check and the decoders.
"""

from __future__ import annotations

from torch import nn

from rsdvla.checkpoints import check_same


def check_main_tokenizer(main: nn.Module, tokenizer: nn.Module) -> None:
    """Raise ``ValueError`` if the tokenizer's layers, levels or tokens per layer differ from main's."""
    check_same(
        tokenizer,
        "tokenizer",
        main,
        "main",
        ("num_layers", "levels", "tokens_per_layer"),
        "use the tokenizer checkpoint the main model was trained with (ckpt.tokenizer)",
    )


def check_teacher(teacher: nn.Module, draft: nn.Module, teacher_path: str) -> None:
    """A distillation teacher (main) must read the draft's hidden states and share its code space."""
    check_same(
        teacher,
        f"{teacher_path}: teacher main",
        draft,
        "draft",
        ("hidden_dim", "tokens_per_layer", "levels"),
        "set model.module.teacher_ckpt to a main trained on this store",
    )


def check_draft(main: nn.Module, draft: nn.Module, k: int | None) -> int:
    """Validate the draft against main and return the number of layers to draft (default: the draft's k)."""
    cfg = main.config
    draft_k = int(getattr(draft, "num_draft_layers", 0))
    if draft_k < 1:
        raise ValueError(
            f"draft model has num_draft_layers={draft_k}; it must propose at least one layer"
        )
    if getattr(draft, "config", None) is not None:
        check_same(
            main,
            "main",
            draft,
            "draft",
            ("levels", "tokens_per_layer"),
            "use a draft checkpoint trained with the same tokenizer (ckpt.draft)",
        )
    k = draft_k if k is None else int(k)
    upper = min(draft_k, cfg.num_code_layers - 1)
    if not 1 <= k <= upper:
        raise ValueError(
            f"decoder.k={k} is out of range: it must be in 1..{upper} "
            f"(the draft proposes {draft_k} layers, main decodes {cfg.num_code_layers}); set decoder.k accordingly"
        )
    return k
