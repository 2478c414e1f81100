"""Draft-only decoding: the draft's k layers, no verification, no main step (the floor of cost)."""

from __future__ import annotations

import torch
from torch import nn

from rsdvla.decoding.compat import check_context_draft, check_draft, check_main_tokenizer
from rsdvla.decoding.main_only import check_depth
from rsdvla.decoding.speculative import draft_logits_for
from rsdvla.decoding.stats import DecodeResult, DecodeStats, StageTimer


class DraftOnlyDecoder:
    """The draft's greedy layers ``0..k-1``, decoded by the tokenizer from that k-layer prefix.

    ``main`` is used only for a context draft's context state (one linear map) and the checks.
    ``decoder(h[B, H]) -> DecodeResult(codes[B, T, D, k], actions[B, T, A], stats)``; the stats
    report no accepted layers and ``num_main_steps = 0``. ``depth``: decode at most this many
    layers (``min(k, depth)``; None: k), as the other decoders' ``decoder.depth``.
    """

    needs_draft = True

    def __init__(
        self,
        main: nn.Module,
        draft: nn.Module,
        tokenizer: nn.Module,
        k: int | None = None,
        depth: int | None = None,
    ):
        check_main_tokenizer(main, tokenizer)
        self.k = check_draft(main, draft, k)
        if depth is not None:
            self.k = min(self.k, check_depth(depth, main.config.num_code_layers))
        check_context_draft(main, draft)
        self.main, self.draft, self.tokenizer = main.eval(), draft.eval(), tokenizer.eval()

    @torch.inference_mode()
    def __call__(self, h: torch.Tensor) -> DecodeResult:
        timer = StageTimer(h.device)
        layers = draft_logits_for(self.draft, self.main, h)[:, : self.k].argmax(-1)  # [B, k, N]
        timer.lap("draft")
        codes = self.tokenizer.layers_to_codes(layers)
        actions = self.tokenizer.decode(codes, num_layers=self.k, validate=False)
        timer.lap("detokenize")
        b = h.shape[0]
        decoded = torch.full((b,), self.k, device=h.device)
        stats = DecodeStats.not_speculated(b, h.device, 0, timer, decoded_layers=decoded)
        return DecodeResult(codes=codes, actions=actions, stats=stats)

    def __repr__(self) -> str:
        return f"DraftOnlyDecoder(k={self.k}, draft={type(self.draft).__name__})"
