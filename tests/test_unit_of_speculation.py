"""Every decoder at any (G, C) of the chunk residual VQ tokenizer, and the draft tree.

`exact` RSD equals main-only token for token at every shape and tree width (batch 1, float32);
sampling RSD is main's distribution; a tree of width n accepts where the draft's top-1 misses.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from test_decoding import exact_joint
from torch import nn

from rsdvla.decoding import (
    ActionDistanceAcceptance,
    AdaptiveDepthDecoder,
    AgreementAcceptance,
    CorrectedAgreementAcceptance,
    DraftOnlyDecoder,
    ExactAcceptance,
    MainOnlyDecoder,
    SamplingAcceptance,
    SpeculativeDecoder,
)
from rsdvla.decoding.tree import top_layers
from rsdvla.models import ContextDraft, DraftModel, MainModel
from rsdvla.tokenizer import ChunkRVQTokenizer

HIDDEN = 16
SHAPES = [(1, 256), (2, 16), (4, 8)]  # (G, C)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rvq_stack(groups: int, codebook: int, layers: int = 5, k: int = 4, seed: int = 0):
    """Random tiny main, projected draft and RVQ tokenizer of one code space."""
    torch.manual_seed(seed)
    space = dict(tokens_per_layer=groups, levels=codebook, tokenizer_family="rvq")
    main = MainModel(
        hidden_dim=HIDDEN, d_model=32, n_layers=2, n_heads=4, num_code_layers=layers, **space
    )
    draft = DraftModel(hidden_dim=HIDDEN, d_model=32, n_heads=4, num_draft_layers=k, **space)
    tok = ChunkRVQTokenizer(
        groups=groups, codebook_size=codebook, num_layers=layers, latent_dim=8, hidden=16
    )
    return main.eval(), draft.eval(), tok.eval()


class SecondGuessDraft(nn.Module):
    """Proposes main's own greedy layers, except that for layer 0 main's choice is only the
    draft's second most probable layer (token 0 shifted by one code is its first)."""

    def __init__(self, main: MainModel, tokenizer, k: int):
        super().__init__()
        self.reference = MainOnlyDecoder(main, tokenizer)
        self.tokenizer, self.k, self.levels = tokenizer, k, main.config.levels

    @property
    def num_draft_layers(self) -> int:
        return self.k

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer.codes_to_layers(self.reference(h).codes)[:, : self.k]
        logits = nn.functional.one_hot(tokens, self.levels).float() * 10.0
        wrong = (tokens[:, 0, 0] + 1) % self.levels
        logits[:, 0, 0].scatter_(-1, wrong[:, None], 12.0)  # a confident wrong first guess
        return logits


@pytest.mark.parametrize(("groups", "codebook"), SHAPES)
def test_exact_rsd_equals_main_only_at_every_shape_and_tree_width(groups, codebook):
    main, draft, tok = rvq_stack(groups, codebook)
    reference = MainOnlyDecoder(main, tok)
    second = SecondGuessDraft(main, tok, k=4)
    for width in (1, 2, 4):
        for candidate in (draft, second):
            decoder = SpeculativeDecoder(main, candidate, tok, ExactAcceptance(), tree_width=width)
            for i in range(6):
                h = torch.randn(1, HIDDEN, generator=torch.Generator().manual_seed(i))
                want, got = reference(h), decoder(h)
                assert got.codes.shape == (1, groups, 5)
                assert torch.equal(got.codes, want.codes), (width, type(candidate).__name__)
                torch.testing.assert_close(got.actions, want.actions, rtol=0, atol=0)
        # the scripted draft's first guess is wrong and its second right: only a tree accepts
        h = torch.randn(3, HIDDEN, generator=torch.Generator().manual_seed(9))
        accepted = SpeculativeDecoder(main, second, tok, tree_width=width)(h).stats.accepted_layers
        assert accepted.tolist() == ([0, 0, 0] if width == 1 else [4, 4, 4])


@pytest.mark.parametrize(("groups", "codebook"), SHAPES)
def test_every_decoder_runs_at_every_shape(groups, codebook):
    main, draft, tok = rvq_stack(groups, codebook)
    ctx_draft = ContextDraft(
        context_dim=32,
        num_draft_layers=3,
        tokens_per_layer=groups,
        levels=codebook,
        tokenizer_family="rvq",
    ).eval()
    h = torch.randn(4, HIDDEN)
    full = MainOnlyDecoder(main, tok)(h)
    decoders = [
        MainOnlyDecoder(main, tok, depth=3),
        AdaptiveDepthDecoder(main, tok, epsilon=0.0),
        DraftOnlyDecoder(main, draft, tok),
        SpeculativeDecoder(main, ctx_draft, tok),
        SpeculativeDecoder(main, draft, tok, AgreementAcceptance(0.5), tree_width=2),
        SpeculativeDecoder(main, draft, tok, CorrectedAgreementAcceptance(0.5)),
        SpeculativeDecoder(main, draft, tok, ActionDistanceAcceptance(0.05), depth=4),
        SpeculativeDecoder(main, draft, tok, SamplingAcceptance(1.0, seed=0)),
    ]
    for decoder in decoders:
        out = decoder(h)
        assert out.codes.shape[:2] == (4, groups) and out.actions.shape == (4, 8, 7)
        assert 0 <= int(out.codes.min()) and int(out.codes.max()) < codebook
        assert torch.isfinite(out.actions).all()
    # main-only at depth 3 is the first 3 layers of the full decode (a prefix)
    assert torch.equal(MainOnlyDecoder(main, tok, depth=3)(h).codes, full.codes[..., :3])
    assert torch.equal(
        SpeculativeDecoder(main, ctx_draft, tok, depth=3)(h).codes, full.codes[..., :3]
    )


@pytest.mark.parametrize(("groups", "codebook", "layers", "k"), [(1, 4, 3, 2), (2, 3, 2, 1)])
def test_sampling_rsd_is_main_only_sampling_in_distribution(groups, codebook, layers, k):
    """Token-level speculative sampling: total variation of the empirical joint of all codes to
    main's exact joint (E[TV] <= 0.5 sqrt(M / n) ~ 0.016 at M = 64, n = 60k)."""
    main, draft, tok = rvq_stack(groups, codebook, layers=layers, k=k, seed=3)
    h = torch.randn(1, HIDDEN)
    target = exact_joint(main, h, 1.0)  # main's exact joint, by enumeration
    n = 60_000

    def tv(codes: torch.Tensor) -> float:
        flat = tok.codes_to_layers(codes).flatten(1)
        index = (flat * codebook ** torch.arange(flat.shape[1] - 1, -1, -1)).sum(1)
        empirical = torch.bincount(index, minlength=len(target)).double() / n
        return 0.5 * float((empirical - target).abs().sum())

    rsd = SpeculativeDecoder(main, draft, tok, SamplingAcceptance(1.0, seed=0))(h.expand(n, -1))
    assert tv(rsd.codes) < 0.04
    assert 0 < rsd.stats.accepted_layers.float().mean() < k  # both accept and resample happen
    baseline = MainOnlyDecoder(main, tok, temperature=1.0, seed=1)(h.expand(n, -1))
    assert tv(baseline.codes) < 0.04
    # power: keeping the draft's own tokens would be far from main
    with torch.no_grad():
        p0 = torch.softmax(main.step(main.start(h), None), -1)
        q0 = torch.softmax(draft(h)[:, 0], -1)
    assert 0.5 * (p0 - q0).abs().sum(-1).max() > 0.1


def test_top_layers_are_the_most_probable_layers():
    """The beam over tokens returns the n most probable layers (checked by enumeration)."""
    logits = torch.randn(5, 3, 4)  # B, N, K
    logp = torch.log_softmax(logits, -1)
    every = torch.tensor(list(itertools.product(range(4), repeat=3)))  # [64, 3]
    scores = logp[:, torch.arange(3), every].sum(-1)  # [B, 64]
    for width in (1, 2, 5, 10):
        got = top_layers(logits, width)
        assert got.shape == (5, width, 3)
        want = scores.topk(width, dim=-1).values
        got_scores = logp.gather(-1, got.transpose(1, 2)).sum(1)  # [B, width]
        torch.testing.assert_close(got_scores, want)
        assert torch.equal(got[:, 0], logits.argmax(-1))


def test_tree_width_and_draft_mismatches_are_refused_in_one_line():
    main, draft, tok = rvq_stack(1, 8)
    with pytest.raises(ValueError, match=r"decoder\.tree_width=0 must be >= 1"):
        SpeculativeDecoder(main, draft, tok, tree_width=0)
    with pytest.raises(ValueError, match=r"decoder\.tree_width=9 exceeds the 8 distinct layers"):
        SpeculativeDecoder(main, draft, tok, tree_width=9)
    with pytest.raises(ValueError, match=r"tree_width=2 needs a greedy acceptance rule"):
        SpeculativeDecoder(main, draft, tok, SamplingAcceptance(1.0), tree_width=2)
    # a draft of another family (same numbers) or another vocabulary is refused
    rfsq_draft = DraftModel(
        hidden_dim=HIDDEN, d_model=32, n_heads=4, num_draft_layers=3, tokens_per_layer=1, levels=8
    ).eval()
    with pytest.raises(
        ValueError, match=r"main has tokenizer_family=rvq but draft\.tokenizer_family=rfsq"
    ):
        SpeculativeDecoder(main, rfsq_draft, tok)
    _, other, _ = rvq_stack(1, 16)
    with pytest.raises(ValueError, match=r"main has levels=8 but draft\.levels=16"):
        SpeculativeDecoder(main, other, tok)
    # k + 1 > num_layers: the draft cannot propose every layer
    with pytest.raises(ValueError, match=r"decoder\.k=5 is out of range"):
        SpeculativeDecoder(main, draft, tok, k=5)
    # main-only with a tokenizer of the other family
    from rsdvla.tokenizer import RFSQTokenizer

    rfsq = RFSQTokenizer(chunk_size=1, latent_dim=1, num_layers=5, levels=8).eval()
    with pytest.raises(
        ValueError, match=r"tokenizer has family=rfsq but main\.tokenizer_family=rvq"
    ):
        MainOnlyDecoder(main, rfsq)


def test_a_tree_verify_pass_counts_its_rows():
    """Cost of a draft tree: n rows of k + 1 positions in the one verify pass, weights read once."""
    from rsdvla.decoding.cost import call_passes

    main, draft, tok = rvq_stack(1, 16)
    h = torch.randn(1, HIDDEN)
    one, four = (SpeculativeDecoder(main, draft, tok, k=3, tree_width=n) for n in (1, 4))
    verify_1 = next(p for p in call_passes(one, one(h).stats) if p.kind == "verify")
    verify_4 = next(p for p in call_passes(four, four(h).stats) if p.kind == "verify")
    assert (verify_1.positions, verify_4.positions) == (4, 16)
    assert verify_4.flops == 4 * verify_1.flops and verify_4.weight_bytes == verify_1.weight_bytes
