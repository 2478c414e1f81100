"""Decoders: RSD with `exact` equals main-only greedy, acceptance rules, sampling is exact in distribution."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from rsdvla.decoding import (
    ActionDistanceAcceptance,
    AgreementAcceptance,
    ExactAcceptance,
    MainOnlyDecoder,
    SamplingAcceptance,
    SpeculativeDecoder,
)
from rsdvla.models import DraftModel, MainModel
from rsdvla.tokenizer import RFSQTokenizer, codes_to_layers

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
HIDDEN = 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest


def tiny_stack(
    layers: int = 8,
    levels: int = 7,
    chunk: int = 2,
    latent: int = 4,
    draft_k: int = 7,
    seed: int = 0,
):
    """Random tiny main, draft and tokenizer that fit together (N = chunk * latent tokens per layer)."""
    torch.manual_seed(seed)
    n = chunk * latent
    main = MainModel(
        hidden_dim=HIDDEN,
        d_model=32,
        n_layers=2,
        n_heads=4,
        num_code_layers=layers,
        tokens_per_layer=n,
        levels=levels,
    )
    draft = DraftModel(
        hidden_dim=HIDDEN,
        d_model=32,
        n_heads=4,
        num_draft_layers=draft_k,
        tokens_per_layer=n,
        levels=levels,
    )
    tokenizer = RFSQTokenizer(
        chunk_size=chunk, latent_dim=latent, num_layers=layers, levels=levels, hidden=16
    )
    return main.eval(), draft.eval(), tokenizer.eval()


class ScriptedDraft(nn.Module):
    """A draft whose proposals derive from main's own greedy codes (computed inside, cost irrelevant here).

    ``wrong_from[b]``: layers >= this index get every token shifted by one level (never main's argmax);
    ``wrong_share``: instead, that share of the tokens of every layer is shifted.
    """

    def __init__(self, main: MainModel, tokenizer: RFSQTokenizer, k: int):
        super().__init__()
        self.main_only = MainOnlyDecoder(main, tokenizer)
        self.levels = main.config.levels
        self.k = k
        self.wrong_from: torch.Tensor | None = None
        self.wrong_share = 0.0

    @property
    def num_draft_layers(self) -> int:
        return self.k

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        tokens = codes_to_layers(self.main_only(h).codes)[:, : self.k]  # [B, k, N]
        wrong = torch.zeros_like(tokens, dtype=torch.bool)
        if self.wrong_from is not None:
            wrong |= (torch.arange(self.k) >= self.wrong_from[:, None])[..., None]
        if self.wrong_share:
            n = tokens.shape[-1]
            wrong[..., : round(self.wrong_share * n)] = True
        tokens = torch.where(wrong, (tokens + 1) % self.levels, tokens)
        return F.one_hot(tokens, self.levels).float() * 10.0


def greedy_tokens(main, tokenizer, h):
    return codes_to_layers(MainOnlyDecoder(main, tokenizer)(h).codes)


# ------------------------------------------------------------------------------------ exact


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_exact_rsd_equals_main_only_for_every_k(batch):
    main, draft, tokenizer = tiny_stack()
    scripted = ScriptedDraft(main, tokenizer, k=7)
    h = torch.randn(batch, HIDDEN)
    reference = MainOnlyDecoder(main, tokenizer)(h)
    generator = torch.Generator().manual_seed(batch)
    for k in range(1, 8):
        # wrong_from = 8: every layer of the draft is main's own
        wrong_from = torch.randint(0, 9, (batch,), generator=generator)
        scripted.wrong_from = wrong_from
        for candidate in (scripted, draft):
            out = SpeculativeDecoder(main, candidate, tokenizer, ExactAcceptance(), k=k)(h)
            torch.testing.assert_close(out.codes, reference.codes, rtol=0, atol=0)
            torch.testing.assert_close(out.actions, reference.actions)
        expected = wrong_from.clamp(max=k)
        scripted_out = SpeculativeDecoder(main, scripted, tokenizer, ExactAcceptance(), k=k)(h)
        assert scripted_out.stats.accepted_layers.tolist() == expected.tolist()
        assert (
            scripted_out.stats.layer_accepted.tolist()
            == (torch.arange(k) < expected[:, None]).tolist()
        )
        assert scripted_out.stats.num_main_steps == 8 - 1 - int(expected.min())


@pytest.mark.parametrize("k", [3, 7])
def test_oracle_draft_accepts_every_layer(k):
    main, _, tokenizer = tiny_stack()
    h = torch.randn(4, HIDDEN)
    out = SpeculativeDecoder(main, ScriptedDraft(main, tokenizer, k), tokenizer, ExactAcceptance())(
        h
    )
    assert out.stats.accepted_layers.tolist() == [k] * 4
    assert out.stats.layer_accepted.all()
    assert out.stats.num_main_steps == 8 - 1 - k
    assert torch.equal(out.codes, MainOnlyDecoder(main, tokenizer)(h).codes)


@pytest.mark.parametrize(
    "rule", [ExactAcceptance(), AgreementAcceptance(0.01), ActionDistanceAcceptance(0.0)]
)
def test_never_agreeing_draft_accepts_nothing_and_returns_main_answer(rule):
    main, _, tokenizer = tiny_stack()
    h = torch.randn(5, HIDDEN)
    scripted = ScriptedDraft(main, tokenizer, k=3)
    scripted.wrong_from = torch.zeros(5, dtype=torch.long)
    out = SpeculativeDecoder(main, scripted, tokenizer, rule)(h)
    assert out.stats.accepted_layers.tolist() == [0] * 5
    # only layer 0 is judged against main's greedy prefix; later layers follow a wrong layer 0
    assert out.stats.token_agreement[:, 0].eq(0).all()
    assert out.stats.num_main_steps == 7
    assert torch.equal(out.codes, MainOnlyDecoder(main, tokenizer)(h).codes)


def test_skip_below_falls_back_to_main_only_and_probes():
    main, _, tokenizer = tiny_stack()
    h = torch.randn(3, HIDDEN)
    reference = MainOnlyDecoder(main, tokenizer)(h).codes
    never = ScriptedDraft(main, tokenizer, k=3)
    never.wrong_from = torch.zeros(3, dtype=torch.long)
    decoder = SpeculativeDecoder(main, never, tokenizer, skip_below=0.7, probe_every=4)
    flags = []
    for _ in range(20):
        out = decoder(h)
        flags.append(out.stats.speculated)
        assert torch.equal(out.codes, reference)
    first_skip = flags.index(False)  # the average falls from 3 below 0.7 after 7 calls
    assert first_skip == 7 and flags[first_skip:] == ([False] * 3 + [True]) * 3 + [False]
    assert out.stats.layer_accepted.shape == (3, 3) and out.stats.seconds["verify"] == 0
    oracle = SpeculativeDecoder(main, ScriptedDraft(main, tokenizer, 3), tokenizer, skip_below=0.7)
    assert all(oracle(h).stats.speculated for _ in range(10))


def test_stats_shapes_and_stage_times():
    main, draft, tokenizer = tiny_stack(draft_k=3)
    out = SpeculativeDecoder(main, draft, tokenizer)(torch.randn(6, HIDDEN))
    stats = out.stats
    assert out.codes.shape == (6, 2, 4, 8) and out.codes.dtype == torch.long
    assert out.actions.shape == (6, 2, 7)
    assert stats.layer_accepted.shape == (6, 3) and stats.token_agreement.shape == (6, 3)
    assert set(stats.seconds) == {"draft", "verify", "main_steps", "detokenize"}
    assert all(v > 0 for v in stats.seconds.values())
    baseline = MainOnlyDecoder(main, tokenizer)(torch.randn(6, HIDDEN)).stats
    assert (
        baseline.num_main_steps == 8
        and baseline.seconds["verify"] == 0
        and baseline.layer_accepted.shape == (6, 0)
    )


# ------------------------------------------------------------------------------------ agreement / distance


def test_agreement_keeps_drafted_codes_above_threshold():
    main, _, tokenizer = tiny_stack()
    h = torch.randn(4, HIDDEN)
    scripted = ScriptedDraft(main, tokenizer, k=1)
    scripted.wrong_share = 0.25  # 2 of 8 tokens differ from main's argmax
    drafted = scripted(h).argmax(-1)
    accepted = SpeculativeDecoder(main, scripted, tokenizer, AgreementAcceptance(0.7))(h)
    assert accepted.stats.accepted_layers.tolist() == [1] * 4
    torch.testing.assert_close(accepted.stats.token_agreement, torch.full((4, 1), 0.75))
    assert torch.equal(codes_to_layers(accepted.codes)[:, :1], drafted)
    # layers after the accepted one are main's greedy continuation of the drafted layer
    assert torch.equal(
        codes_to_layers(accepted.codes)[:, 1], main.verify(h, drafted)[:, 1].argmax(-1)
    )
    rejected = SpeculativeDecoder(main, scripted, tokenizer, AgreementAcceptance(0.8))(h)
    assert rejected.stats.accepted_layers.tolist() == [0] * 4
    assert torch.equal(rejected.codes, MainOnlyDecoder(main, tokenizer)(h).codes)


@pytest.mark.parametrize("norm", ["max", "l2"])
def test_action_distance_matches_partial_decodes(norm):
    main, draft, tokenizer = tiny_stack(draft_k=3)
    h = torch.randn(3, HIDDEN)
    drafted = draft.propose(h)
    main_choice = main.verify(h, drafted).argmax(-1)
    rule = ActionDistanceAcceptance(epsilon=0.1, norm=norm)
    distances = rule.distances(drafted, main_choice, tokenizer)
    codes_d = drafted.reshape(3, 3, 2, 4).permute(0, 2, 3, 1)
    codes_m = main_choice[:, :3].reshape(3, 3, 2, 4).permute(0, 2, 3, 1)
    for j in range(3):
        mixed = torch.cat([codes_d[..., :j], codes_m[..., j : j + 1]], -1)
        diff = (
            tokenizer.decode(codes_d[..., : j + 1], num_layers=j + 1)
            - tokenizer.decode(mixed, num_layers=j + 1)
        ).flatten(1)
        expected = diff.abs().amax(1) if norm == "max" else diff.norm(dim=1)
        torch.testing.assert_close(distances[:, j], expected)
    differs = (drafted != main_choice[:, :3]).any(-1)
    assert (distances[differs] > 0).all() and (distances[~differs] == 0).all()


def test_action_distance_with_huge_epsilon_accepts_any_draft():
    main, draft, tokenizer = tiny_stack(draft_k=3)
    h = torch.randn(4, HIDDEN)
    out = SpeculativeDecoder(main, draft, tokenizer, ActionDistanceAcceptance(epsilon=1e9))(h)
    assert out.stats.accepted_layers.tolist() == [3] * 4
    assert torch.equal(codes_to_layers(out.codes)[:, :3], draft.propose(h))


# ------------------------------------------------------------------------------------ sampling


def exact_joint(main: MainModel, h: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probability of every full code sequence (base-K index of the [L, N] tokens) under main."""
    cfg = main.config
    cells = cfg.num_code_layers * cfg.tokens_per_layer
    seqs = torch.tensor(list(itertools.product(range(cfg.levels), repeat=cells)))
    tokens = seqs.view(-1, cfg.num_code_layers, cfg.tokens_per_layer)
    with torch.no_grad():
        logp = torch.log_softmax(main(h.expand(len(seqs), -1), tokens) / temperature, -1)
    return logp.gather(-1, tokens.unsqueeze(-1)).flatten(1).sum(1).exp()


def empirical_joint(codes: torch.Tensor, levels: int) -> torch.Tensor:
    tokens = codes_to_layers(codes).flatten(1)  # [B, L*N], layer-major like itertools.product
    index = (tokens * levels ** torch.arange(tokens.shape[1] - 1, -1, -1)).sum(1)
    return torch.bincount(index, minlength=levels ** tokens.shape[1]).double() / len(index)


@pytest.mark.parametrize(("layers", "chunk", "k"), [(3, 1, 2), (2, 2, 1)])
def test_sampling_is_exact_in_distribution(layers, chunk, k):
    """Total variation between the empirical joint of all codes and main's exact joint.

    With n samples over M outcomes, E[TV] <= 0.5 * sqrt(M / n) (about 0.017 here); the bound
    0.04 fails a decoder that keeps the draft's tokens (its layer-0 TV to main is checked > 0.1).
    """
    temperature, n = 1.0, 60_000
    main, draft, tokenizer = tiny_stack(
        layers=layers, levels=3, chunk=chunk, latent=1, draft_k=k, seed=3
    )
    h = torch.randn(1, HIDDEN)
    target = exact_joint(main, h, temperature)
    assert abs(float(target.sum()) - 1) < 1e-4
    torch.manual_seed(0)
    decoder = SpeculativeDecoder(main, draft, tokenizer, SamplingAcceptance(temperature, seed=0))
    result = decoder(h.expand(n, -1))
    tv = 0.5 * (empirical_joint(result.codes, 3) - target).abs().sum().item()
    assert tv < 0.04, f"sampling RSD is off main's distribution: TV={tv:.4f}"
    # both paths (accept, resample) are exercised
    assert 0 < result.stats.accepted_layers.float().mean() < k
    # power check: the draft's own layer-0 distribution is far from main's
    with torch.no_grad():
        p0 = torch.softmax(main.step(main.start(h), None) / temperature, -1)
        q0 = torch.softmax(draft(h)[:, 0] / temperature, -1)
    assert 0.5 * (p0 - q0).abs().sum(-1).max() > 0.1
    # main-only sampling agrees with the same exact joint
    baseline = MainOnlyDecoder(main, tokenizer, temperature=temperature, seed=1)(h.expand(n, -1))
    assert 0.5 * (empirical_joint(baseline.codes, 3) - target).abs().sum().item() < 0.04


# ------------------------------------------------------------------------------------ config and errors


def test_k_out_of_range_and_mismatched_tokenizer_fail_early():
    main, draft, tokenizer = tiny_stack(draft_k=3)
    for k in (0, 4):
        with pytest.raises(ValueError, match=r"decoder.k=.* out of range"):
            SpeculativeDecoder(main, draft, tokenizer, k=k)
    short = RFSQTokenizer(chunk_size=2, latent_dim=4, num_layers=6, levels=7, hidden=16)
    with pytest.raises(ValueError, match="num_layers"):
        MainOnlyDecoder(main, short)
    with pytest.raises(ValueError, match="threshold"):
        AgreementAcceptance(1.5)
    with pytest.raises(ValueError, match="temperature"):
        SamplingAcceptance(0.0)
    with pytest.raises(ValueError, match="skip_below"):
        SpeculativeDecoder(main, draft, tokenizer, skip_below=5)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+decoder=main_only"], MainOnlyDecoder),
        (["+decoder=rsd"], ExactAcceptance),
        (
            ["+decoder=rsd", "decoder/acceptance=agreement", "decoder.acceptance.threshold=0.5"],
            AgreementAcceptance,
        ),
        (
            ["+decoder=rsd", "decoder/acceptance=action_distance", "decoder.k=2"],
            ActionDistanceAcceptance,
        ),
        (
            ["+decoder=rsd", "decoder/acceptance=sampling", "decoder.acceptance.temperature=0.5"],
            SamplingAcceptance,
        ),
    ],
)
def test_decoder_configs_instantiate(overrides, expected):
    main, draft, tokenizer = tiny_stack(draft_k=3)
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(overrides=overrides)
    decoder = instantiate(cfg.decoder, main=main, draft=draft, tokenizer=tokenizer)
    built = decoder if expected is MainOnlyDecoder else decoder.acceptance
    assert isinstance(built, expected)
    if expected is AgreementAcceptance:
        assert built.threshold == 0.5
    if expected is ActionDistanceAcceptance:
        assert decoder.k == 2
    assert decoder(torch.randn(2, HIDDEN)).codes.shape == (2, 2, 4, 8)
