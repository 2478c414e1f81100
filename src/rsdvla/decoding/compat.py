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
        ("family", "num_layers", "levels", "tokens_per_layer"),
        "use the tokenizer checkpoint the main model was trained with (ckpt.tokenizer)",
    )


def check_teacher(teacher: nn.Module, draft: nn.Module, teacher_path: str) -> None:
    """A distillation teacher (main) must read the draft's hidden states and share its code space."""
    check_same(
        teacher,
        f"{teacher_path}: teacher main",
        draft,
        "draft",
        ("family", "hidden_dim", "tokens_per_layer", "levels"),
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
            ("family", "levels", "tokens_per_layer"),
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


def check_context_draft(
    main: nn.Module,
    draft: nn.Module,
    main_name: str = "the main model",
    draft_name: str = "context draft",
    fix: str = "use a context draft trained on this main checkpoint (ckpt.draft)",
) -> None:
    """A draft that reads main's context state (``reads_main_context``) must be as wide as main's
    ``d_model``; other drafts pass. One line: ``<draft_name> reads a <w>-wide context but
    <main_name>'s d_model is <d>; <fix>``."""
    if not getattr(draft, "reads_main_context", False):
        return
    want, got = main.config.d_model, draft.config.context_dim
    if want != got:
        raise ValueError(
            f"{draft_name} reads a {got}-wide context but {main_name}'s d_model is {want}; {fix}"
        )


def check_context_teacher(teacher: nn.Module, draft: nn.Module, teacher_path: str) -> None:
    """The main a context draft is trained on must match its width (``d_model``) and code space."""
    where, field = f"{teacher_path}: teacher main", "model.module.context_draft"
    check_context_draft(
        teacher, draft, where, field, f"set {field}.context_dim={teacher.config.d_model}"
    )
    check_same(
        teacher,
        where,
        draft,
        field,
        ("family", "tokens_per_layer", "levels"),
        f"set that field of {field} to the teacher's, or model.module.teacher_ckpt to a main of this code space",
    )
