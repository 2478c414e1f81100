"""Load what an evaluation needs from standalone checkpoints: tokenizer, main, draft, decoders."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from rsdvla.checkpoints import (
    CheckpointError,
    check_stack_lineage,
    check_tokenizer_matches,
    check_trained_with,
    checkpoint_kind,
    read_checkpoint,
)
from rsdvla.cli import build
from rsdvla.data.normalization import ActionNormalizer
from rsdvla.decoding.precision import cast_for_decoding, exactness_note, resolve_precision
from rsdvla.models import DraftModel, MainModel
from rsdvla.models.context_draft import ContextDraft
from rsdvla.tokenizer import ChunkRVQTokenizer, RFSQTokenizer, load_tokenizer


@dataclass
class EvalStack:
    """Everything between a hidden state and an action chunk.

    ``decoder`` is the configured one (``cfg.decoder``); ``baseline`` is greedy main-only
    decoding on the same models, timed side by side for the speedup.
    """

    tokenizer: RFSQTokenizer | ChunkRVQTokenizer
    main: MainModel
    draft: DraftModel | None
    decoder: Any
    baseline: Any
    normalizer: ActionNormalizer
    device: torch.device
    precision: str = "float32"


def content_hashes(stack) -> dict:
    """``{"tokenizer", "main"[, "draft"]: content hash}`` of a stack: which checkpoints numbers came from."""
    models = (("tokenizer", stack.tokenizer), ("main", stack.main), ("draft", stack.draft))
    return {role: getattr(m, "content_hash", None) for role, m in models if m is not None}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={name} but no CUDA GPU is visible; use device=cpu")
    try:
        return torch.device(name)
    except RuntimeError:  # torch lists every device type it knows
        raise ValueError(
            f"device={name}: not a torch device; use device=cpu, device=cuda[:N] or device=auto"
        ) from None


def decoder_needs_draft(decoder_cfg: DictConfig) -> bool:
    """Whether the configured decoder class uses a draft model (its ``needs_draft`` attribute)."""
    return bool(getattr(get_class(decoder_cfg._target_), "needs_draft", True))


def load_draft(path) -> DraftModel | ContextDraft:
    """The draft checkpoint at ``path``, of either kind (``draft``: projected; ``context_draft``)."""
    kind = checkpoint_kind(read_checkpoint(path, "draft", field="ckpt.draft"))
    if kind == "context_draft":
        return ContextDraft.from_checkpoint(path)
    return DraftModel.from_checkpoint(path)


def load_stack(cfg: DictConfig) -> EvalStack:
    """Checkpoints named in ``cfg.ckpt`` -> an :class:`EvalStack` on ``cfg.device``, main and
    draft in ``cfg.precision`` (``float32`` | ``bfloat16``; the tokenizer stays float32).

    The tokenizer is of the family its checkpoint records (RFSQ or chunk residual VQ).
    Fails early (one line naming the file and the field) when the tokenizer (family, vocabulary,
    tokens per layer, layers) does not match the main or draft model, when main or draft was trained with another tokenizer (content hash) or
    the draft on another backbone's store (lineage), or when the checkpoints carry no
    normalization statistics.
    """
    device = resolve_device(cfg.get("device", "auto"))
    precision = str(cfg.get("precision", "float32"))
    dtype = resolve_precision(precision)  # before any checkpoint is read
    tokenizer = load_tokenizer(cfg.ckpt.tokenizer).to(device)
    main = MainModel.from_checkpoint(cfg.ckpt.main).to(device)
    check_tokenizer_matches(
        tokenizer.config, main.config, cfg.ckpt.tokenizer, f"{cfg.ckpt.main}: main"
    )
    draft = None
    if decoder_needs_draft(cfg.decoder):
        draft = load_draft(cfg.ckpt.draft).to(device)
        check_tokenizer_matches(
            tokenizer.config, draft.config, cfg.ckpt.tokenizer, f"{cfg.ckpt.draft}: draft"
        )
    check_stack_lineage(tokenizer, main, draft)  # main and draft trained with this tokenizer
    if getattr(draft, "reads_main_context", False):  # a context draft is tied to its main
        check_trained_with(
            draft, "context_draft", "teacher", str(cfg.ckpt.main), main.content_hash, "ckpt.main"
        )
    if not main.action_stats:
        raise CheckpointError(
            f"{cfg.ckpt.main}: field `hyper_parameters.action_stats` is missing; retrain with `python train.py model=main`"
        )
    normalizer = ActionNormalizer.from_dict(
        main.action_stats, source=f"{cfg.ckpt.main}: hyper_parameters.action_stats"
    )
    from rsdvla.decoding import MainOnlyDecoder

    cast_for_decoding(dtype, main, draft)  # content hashes stay those of the float32 files
    decoder = build(cfg.decoder, main=main, draft=draft, tokenizer=tokenizer)
    baseline = MainOnlyDecoder(main=main, tokenizer=tokenizer)
    note = exactness_note(decoder, precision, device)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return EvalStack(tokenizer, main, draft, decoder, baseline, normalizer, device, precision)
