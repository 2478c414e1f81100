"""Residual speculative decoding: draft k layers, verify them in one main pass, finish with steps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rsdvla.decoding.acceptance import AcceptanceRule, ExactAcceptance, Judgement
from rsdvla.decoding.compat import check_context_draft, check_draft, check_main_tokenizer
from rsdvla.decoding.compile import compile_main
from rsdvla.decoding.main_loop import decode_steps, new_layers
from rsdvla.decoding.main_only import check_depth
from rsdvla.decoding.rows import RowState, advance
from rsdvla.decoding.sampling import RowNoise
from rsdvla.decoding.stats import DecodeResult, DecodeStats, StageTimer, merge_row_results
from rsdvla.decoding.tree import best_candidates, check_tree_width, top_layers, tree_rows


def draft_logits_for(draft: nn.Module, main: nn.Module, h: torch.Tensor, state=None):
    """Draft logits ``[B, k', N, K]``: a context draft reads ``state.ctx`` (``main.start(h)``),
    a projected draft reads ``h``."""
    if getattr(draft, "reads_main_context", False):
        ctx = (state.ctx if state is not None else main.context(h).unsqueeze(1))[:, 0]
        return draft(ctx)
    return draft(h)


class SpeculativeDecoder:
    """Draft -> verify -> accept a per-sample prefix -> bonus layer -> remaining layers with main steps.

    Args:
        main: ``MainModel`` (``verify``, ``step``, KV cache).
        draft: ``DraftModel`` (reads ``h``), ``ContextDraft`` (``reads_main_context``: reads main's
            context state, which the verify pass then reuses), or any module with
            ``num_draft_layers`` and ``forward(h) -> logits[B, k', N, K]``.
        tokenizer: a tokenizer (RFSQ or chunk residual VQ) matching ``main``.
        acceptance: an ``AcceptanceRule`` (``decoder/acceptance`` config group); default ``exact``.
        k: layers to draft, 1..min(draft k, L-1); None uses the draft's k.
        skip_below: opt-in fallback for drafts that do not pay off. The decoder keeps an exponential
            moving average (weight 0.2) of each call's fewest accepted layers; while it is below
            ``skip_below`` a call decodes main-only (no draft, no verify: ``stats.speculated`` False)
            except every ``probe_every``-th call, which speculates to refresh the average. Break-even
            is about (draft + verify - step) / step layers (~0.7 on a CPU at batch 1). None: always draft.
        probe_every: calls between probes while skipping.
        compile: compile main's pass (see ``rsdvla.decoding.compile``); eager with one line if unavailable.
        depth: decode only the first ``depth`` layers (2..L; None: all L), as ``MainOnlyDecoder``'s
            ``depth``: the draft proposes at most ``depth - 1`` of them, main finishes the rest,
            and the tokenizer decodes that prefix. With ``ExactAcceptance`` the codes equal
            ``MainOnlyDecoder(depth=depth)``'s.
        tree_width: n >= 1 guesses for the first drafted layer (a draft tree): the draft's n most
            probable layers (:func:`rsdvla.decoding.tree.top_layers`), each followed by the draft's
            argmax for the later layers, verified as n rows of one batched pass; each sample keeps
            the row with the most accepted layers. Greedy rules only (``exact`` stays exact:
            every row's layer-0 prediction is main's own); 1: one guess.

    One call, for ``h[B, H]``:
      1. draft logits ``[B, k, N, K]`` -> drafted codes ``[B, k, N]`` (``acceptance.propose``);
      2. ``main.verify`` -> logits ``[B, k+1, N, K]`` and the KV cache; the rule marks each drafted
         layer passed or not; sample b accepts the longest passing prefix ``a_b`` (0..k) and takes
         main's own layer ``a_b`` from the verify pass (the bonus layer); a correcting rule also
         replaces the accepted layers' tokens by main's choices from the same pass;
      3. from ``m = min_b a_b`` the cache is truncated to ``m + 1`` positions and main steps decode
         layers ``m+1 .. L-1``; a sample whose layer is already fixed keeps it and ignores the step.
    The only host synchronisation of a call is reading ``min_b a_b`` and ``max_b a_b`` (one
    transfer). With ``ExactAcceptance`` the codes equal ``MainOnlyDecoder``'s (up to
    floating-point ties between the verify pass and single steps).
    Returns ``DecodeResult(codes[B, T, D, depth], actions[B, T, A], stats)`` (depth = L by default).
    """

    needs_draft = True
    takes_rows = True  # decoder(h, rows): per-episode skip_below state and sampling streams

    def __init__(
        self,
        main: nn.Module,
        draft: nn.Module,
        tokenizer: nn.Module,
        acceptance: AcceptanceRule | None = None,
        k: int | None = None,
        skip_below: float | None = None,
        probe_every: int = 8,
        compile: bool = False,
        depth: int | None = None,
        tree_width: int = 1,
    ):
        check_main_tokenizer(main, tokenizer)
        self.k = check_draft(main, draft, k)
        check_context_draft(main, draft)
        self.num_layers = check_speculative_depth(depth, main.config.num_code_layers)
        if depth is not None:
            if k is not None and self.k >= self.num_layers:
                raise ValueError(
                    f"decoder.k={self.k} with decoder.depth={self.num_layers}: RSD drafts fewer "
                    f"layers than it decodes; set decoder.k to 1..{self.num_layers - 1} or null"
                )
            self.k = min(self.k, self.num_layers - 1)
        self.main = main.eval()
        self.draft = draft.eval()
        self.tokenizer = tokenizer.eval()
        self.acceptance = acceptance if acceptance is not None else ExactAcceptance()
        cfg = main.config
        self.tree_width = check_tree_width(tree_width, cfg.tokens_per_layer, cfg.levels)
        if self.tree_width > 1 and self.acceptance.temperature > 0:
            raise ValueError(
                f"decoder.tree_width={self.tree_width} needs a greedy acceptance rule: "
                f"{self.acceptance.name} verifies one sampled draft per layer; set decoder.tree_width=1"
            )
        self.truncated = self.num_layers < main.config.num_code_layers
        if skip_below is not None and not 0 < skip_below <= self.k:
            raise ValueError(
                f"decoder.skip_below must be in (0, k={self.k}] or null, got {skip_below}"
            )
        if probe_every < 1:
            raise ValueError(f"decoder.probe_every must be >= 1, got {probe_every}")
        self.skip_below, self.probe_every = skip_below, int(probe_every)
        self.compiled = compile_main(main) if compile else False
        self.reset_fallback()

    def reset_fallback(self) -> None:
        """Forget the shared ``skip_below`` average (optimistic start: speculate until the draft
        proves useless). Per-row states (``rows``) carry their own average."""
        self._shared = RowState()

    @property
    def accepted_ema(self) -> float:
        """The shared ``skip_below`` average (calls without ``rows``)."""
        return self.k if self._shared.accepted_ema is None else self._shared.accepted_ema

    def _should_speculate(self, row: RowState) -> bool:
        """Whether ``row`` drafts in this call (counts a skipped call toward the next probe)."""
        ema = self.k if row.accepted_ema is None else row.accepted_ema
        if self.skip_below is None or ema >= self.skip_below:
            return True
        row.calls_skipped += 1
        if row.calls_skipped >= self.probe_every:
            row.calls_skipped = 0
            return True
        return False

    @torch.inference_mode()
    def __call__(self, h: torch.Tensor, rows: Sequence[RowState] | None = None) -> DecodeResult:
        """Decode a batch of hidden states ``h[B, H]``.

        ``rows``: one :class:`RowState` per row (see ``rsdvla.decoding.rows``): each row keeps its
        own ``skip_below`` average (updated with its own accepted layers) and sampling stream;
        rows that skip and rows that speculate are decoded as two sub-batches. ``None``: one shared
        state, updated with the batch's fewest accepted layers.
        """
        if rows is None:
            speculate = torch.full((h.shape[0],), self._should_speculate(self._shared))
        else:
            speculate = torch.tensor(
                [self._should_speculate(row) for row in rows], dtype=torch.bool
            )
        noise = self.acceptance.noise(rows)
        if bool(speculate.all()):
            result = self._speculate(h, noise)
        elif not bool(speculate.any()):
            result = self._main_only(h, noise, StageTimer(h.device))
        else:
            on, off = speculate.nonzero()[:, 0], (~speculate).nonzero()[:, 0]
            parts = [
                (on, self._speculate(h[on.to(h.device)], _row_subset(noise, on))),
                (
                    off,
                    self._main_only(
                        h[off.to(h.device)], _row_subset(noise, off), StageTimer(h.device)
                    ),
                ),
            ]
            result = merge_row_results(parts, h.shape[0])
        if rows is None:
            if result.stats.speculated:
                fewest = int(result.stats.accepted_layers.min())
                self._shared.accepted_ema = 0.8 * self.accepted_ema + 0.2 * fewest
        else:
            accepted = result.stats.accepted_layers.tolist()
            for row, spoke, a in zip(rows, speculate.tolist(), accepted, strict=True):
                if spoke:
                    ema = self.k if row.accepted_ema is None else row.accepted_ema
                    row.accepted_ema = 0.8 * ema + 0.2 * a
            advance(rows)
        return result

    def _speculate(self, h: torch.Tensor, noise) -> DecodeResult:
        """Draft, verify and finish every row of ``h`` (steps 1-3 above)."""
        timer = StageTimer(h.device)
        k, n_layers, rule = self.k, self.num_layers, self.acceptance

        state = self.main.start(h)
        draft_logits = draft_logits_for(self.draft, self.main, h, state)[:, :k]
        drafted = rule.propose(draft_logits, noise)  # [B, k, N]
        timer.lap("draft")

        if self.tree_width > 1:
            drafted, judged, state = self._verify_tree(h, state, drafted, draft_logits)
        else:
            main_logits, state = self.main.verify(h, drafted, state=state)
            judged = rule.judge(drafted, draft_logits, main_logits, self.tokenizer, noise)
        layer_accepted = judged.passed.cumprod(dim=1).bool()  # contiguous prefix [B, k]
        accepted = layer_accepted.sum(1)  # a_b: accepted drafted layers; layer a_b is the bonus
        b, _, n_tokens = drafted.shape
        layers = new_layers(b, n_layers, n_tokens, h.device)
        layers[:, : k + 1] = judged.bonus
        if not judged.corrected:
            layers[:, :k] = torch.where(layer_accepted.unsqueeze(-1), drafted, judged.bonus[:, :k])
        fewest, most = torch.stack([accepted.min(), accepted.max()]).tolist()  # the one host sync
        timer.lap("verify")

        if fewest + 1 < n_layers:
            state.truncate(fewest + 1)  # ctx + layers 0..fewest-1, identical for every sample
            decode_steps(
                self.main,
                state,
                layers,
                fewest + 1,
                n_layers,
                lambda logits, j: rule.choose(logits, j, noise),
                accepted,
                most,
            )
        timer.lap("main_steps")

        stats = DecodeStats(
            accepted_layers=accepted,
            layer_accepted=layer_accepted,
            token_agreement=judged.token_agreement,
            num_main_steps=max(n_layers - 1 - fewest, 0),
        )
        return self._finish(layers, stats, timer)

    def _verify_tree(
        self, h: torch.Tensor, state, drafted: torch.Tensor, draft_logits: torch.Tensor
    ):
        """Verify ``tree_width`` first-layer candidates per sample in one pass of ``B * n`` rows.

        ``state``: the call's fresh ``main.start(h)``, whose context each sample's n rows share
        (computed once, not per row). Returns the chosen row per sample: (drafted ``[B, k, N]``,
        its :class:`Judgement`, its decode state with the verify pass's KV cache).
        """
        n = self.tree_width
        rows = tree_rows(drafted, top_layers(draft_logits[:, 0], n))  # [B * n, k, N]
        repeat = torch.arange(h.shape[0], device=h.device).repeat_interleave(n)
        main_logits, state = self.main.verify(h[repeat], rows, state=state.select(repeat))
        judged = self.acceptance.judge(
            rows, draft_logits[repeat], main_logits, self.tokenizer, None
        )
        pick = best_candidates(judged.passed.cumprod(dim=1).sum(1), n)
        chosen = Judgement(
            judged.passed[pick], judged.bonus[pick], judged.token_agreement[pick], judged.corrected
        )
        return rows[pick], chosen, state.select(pick)

    def _main_only(self, h: torch.Tensor, noise, timer: StageTimer) -> DecodeResult:
        """All L layers with main steps (the fallback of ``skip_below``); tokens chosen by the rule."""
        b = h.shape[0]
        layers = new_layers(b, self.num_layers, self.main.config.tokens_per_layer, h.device)
        decode_steps(
            self.main,
            self.main.start(h),
            layers,
            0,
            self.num_layers,
            lambda logits, j: self.acceptance.choose(logits, j, noise),
        )
        timer.lap("main_steps")
        stats = DecodeStats.not_speculated(b, h.device, self.num_layers, num_drafted_layers=self.k)
        return self._finish(layers, stats, timer)

    def _decoded_layers(self, b: int, device) -> torch.Tensor | None:
        return torch.full((b,), self.num_layers, device=device) if self.truncated else None

    def _finish(self, layers: torch.Tensor, stats: DecodeStats, timer: StageTimer) -> DecodeResult:
        codes = self.tokenizer.layers_to_codes(layers)
        actions = self.tokenizer.decode(codes, num_layers=self.num_layers, validate=False)
        timer.lap("detokenize")
        stats.timer = timer
        stats.decoded_layers = self._decoded_layers(layers.shape[0], layers.device)
        return DecodeResult(codes=codes, actions=actions, stats=stats)

    def __repr__(self) -> str:
        skip = (
            ""
            if self.skip_below is None
            else f", skip_below={self.skip_below}, probe_every={self.probe_every}"
        )
        draft = type(self.draft).__name__
        depth = f", depth={self.num_layers}" if self.truncated else ""
        tree = f", tree_width={self.tree_width}" if self.tree_width > 1 else ""
        return (
            f"SpeculativeDecoder(k={self.k}, draft={draft}, acceptance={self.acceptance!r}"
            f"{skip}{depth}{tree})"
        )


def _row_subset(noise, index: torch.Tensor):
    """The noise source of a sub-batch ``index`` (per-row streams follow their rows)."""
    if isinstance(noise, RowNoise):
        picked = index.tolist()
        return RowNoise([noise.seeds[i] for i in picked], [noise.calls[i] for i in picked])
    return noise


def check_speculative_depth(depth: int | None, num_layers: int) -> int:
    """``decoder.depth`` of RSD (None: all L) as an int in ``2..L``: one layer leaves none to draft."""
    depth = check_depth(depth, num_layers)
    if depth < 2:
        raise ValueError(
            f"decoder.depth={depth} leaves no layer to draft (RSD drafts fewer layers than it "
            "decodes); use decoder=main_only decoder.depth=1, or decoder.depth >= 2"
        )
    return depth
