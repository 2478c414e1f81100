"""Loading rsdvla checkpoints without Lightning: one place for the checks and the errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

PRODUCERS = {
    "tokenizer": "python train.py model=tokenizer",
    "main": "python train.py model=main",
    "draft": "python train.py model=draft",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file, the field and the fix."""


def load_checkpoint(path: str | os.PathLike, kind: str, map_location: str = "cpu") -> dict:
    """Read a checkpoint written by ``train.py model=<kind>`` and check what it holds.

    Returns the raw dict with ``state_dict`` and ``hyper_parameters`` (which include the
    model config under ``kind`` and the normalization statistics under ``action_stats``).
    """
    path = Path(path)
    producer = PRODUCERS.get(kind, "train.py")
    if not path.exists():
        raise CheckpointError(
            f"{path}: {kind} checkpoint not found; produce it with `{producer}` or point the config at one "
            f"(evaluate.py: ckpt.{kind}=<path>)"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated or foreign files fail inside torch with long traces
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({type(err).__name__}); re-create it with `{producer}`"
        ) from err
    hparams = ckpt.get("hyper_parameters", {}) if isinstance(ckpt, dict) else {}
    if kind not in hparams or "state_dict" not in ckpt:
        found = hparams.get("kind", "unknown")
        raise CheckpointError(
            f"{path}: field `hyper_parameters.{kind}` missing (this is a {found} checkpoint); pass a checkpoint from `{producer}`"
        )
    return ckpt


def module_state(ckpt: dict, prefix: str) -> dict:
    """The ``state_dict`` entries under ``prefix.`` with the prefix removed."""
    return {
        k.removeprefix(prefix + "."): v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(prefix + ".")
    }


def check_tokenizer_matches(
    tokenizer_config, model_config, tokenizer_path: str, model_field: str
) -> None:
    """Fail early when a tokenizer's K/L/T*D differ from what a main or draft model was built for.

    ``model_config`` needs ``levels``, ``tokens_per_layer`` and either ``num_code_layers`` (main)
    or ``num_draft_layers`` (draft, which must not exceed the tokenizer's L).
    """
    tok = tokenizer_config
    checks = [
        ("levels", tok.levels, model_config.levels),
        ("tokens_per_layer", tok.chunk_size * tok.latent_dim, model_config.tokens_per_layer),
    ]
    if hasattr(model_config, "num_code_layers"):
        checks.append(("num_code_layers", tok.num_layers, model_config.num_code_layers))
    for field, want, got in checks:
        if want != got:
            raise CheckpointError(
                f"{tokenizer_path}: tokenizer has {field}={want} but {model_field}.{field}={got}; "
                f"set {model_field}.{field}={want} or use the tokenizer this model was trained with"
            )
    k = getattr(model_config, "num_draft_layers", None)
    if k is not None and not 1 <= k < tok.num_layers:
        raise CheckpointError(
            f"{tokenizer_path}: tokenizer has {tok.num_layers} layers, {model_field}.num_draft_layers={k} must be in 1..{tok.num_layers - 1}"
        )


def load_module(
    cls, config_cls, path: str | os.PathLike, kind: str, prefix: str, map_location: str = "cpu"
):
    """Build ``cls(config_cls(**hyper_parameters[kind]))`` from a checkpoint and load its weights.

    The normalization statistics are attached as ``.action_stats``; the module is in eval mode.
    """
    ckpt = load_checkpoint(path, kind=kind, map_location=map_location)
    model = cls(config_cls(**ckpt["hyper_parameters"][kind]))
    model.load_state_dict(module_state(ckpt, prefix))
    model.action_stats = ckpt["hyper_parameters"].get("action_stats")
    return model.eval()
