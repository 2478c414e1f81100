"""Checks that a main model, a tokenizer and a draft model fit together (fail early, say the fix)."""

from __future__ import annotations

from torch import nn


def check_main_tokenizer(main: nn.Module, tokenizer: nn.Module) -> None:
    """Raise ``ValueError`` if the tokenizer's layers, levels or tokens per layer differ from main's."""
    cfg = main.config
    pairs = (
        ("num_layers", tokenizer.num_layers, "num_code_layers", cfg.num_code_layers),
        ("levels", tokenizer.levels, "levels", cfg.levels),
        (
            "chunk_size * latent_dim",
            tokenizer.tokens_per_layer,
            "tokens_per_layer",
            cfg.tokens_per_layer,
        ),
    )
    for tok_field, tok_value, main_field, main_value in pairs:
        if tok_value != main_value:
            raise ValueError(
                f"tokenizer `{tok_field}` is {tok_value} but the main model's `{main_field}` is {main_value}; "
                "use the tokenizer checkpoint the main model was trained with (ckpt.tokenizer)"
            )


def check_draft(main: nn.Module, draft: nn.Module, k: int | None) -> int:
    """Validate the draft against main and return the number of layers to draft (default: the draft's k)."""
    cfg = main.config
    draft_k = int(getattr(draft, "num_draft_layers", 0))
    if draft_k < 1:
        raise ValueError(
            f"draft model has num_draft_layers={draft_k}; it must propose at least one layer"
        )
    draft_cfg = getattr(draft, "config", None)
    for name in ("levels", "tokens_per_layer"):
        value = getattr(draft_cfg, name, getattr(cfg, name))
        if value != getattr(cfg, name):
            raise ValueError(
                f"draft model `{name}` is {value} but the main model's is {getattr(cfg, name)}; "
                "use a draft checkpoint trained with the same tokenizer (ckpt.draft)"
            )
    k = draft_k if k is None else int(k)
    upper = min(draft_k, cfg.num_code_layers - 1)
    if not 1 <= k <= upper:
        raise ValueError(
            f"decoder.k={k} is out of range: it must be in 1..{upper} "
            f"(the draft proposes {draft_k} layers, main decodes {cfg.num_code_layers}); set decoder.k accordingly"
        )
    return k
