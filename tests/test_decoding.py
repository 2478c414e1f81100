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
    AdaptiveDepthDecoder,
    AgreementAcceptance,
    CorrectedAgreementAcceptance,
    DraftOnlyDecoder,
    ExactAcceptance,
    MainOnlyDecoder,
    SamplingAcceptance,
    SpeculativeDecoder,
)
from rsdvla.decoding.compat import check_context_teacher
from rsdvla.models import ContextDraft, DraftModel, MainModel
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


# ------------------------------------------------------------------------------------ corrected agreement


def test_corrected_agreement_keeps_mains_tokens_and_only_conditioning_differs():
    main, _, tokenizer = tiny_stack()
    h = torch.randn(4, HIDDEN)
    scripted = ScriptedDraft(main, tokenizer, k=3)
    scripted.wrong_share = 0.25  # 2 of 8 tokens of every drafted layer differ from main's argmax
    drafted = scripted(h).argmax(-1)
    out = SpeculativeDecoder(main, scripted, tokenizer, CorrectedAgreementAcceptance(0.0))(h)
    assert out.stats.accepted_layers.tolist() == [3] * 4
    verify_choice = main.verify(h, drafted).argmax(
        -1
    )  # [B, 4, N], conditioned on the drafted layers
    layers = codes_to_layers(out.codes)
    # every accepted layer and the bonus layer are main's verify argmax, not the drafted tokens
    assert torch.equal(layers[:, :4], verify_choice)
    assert not torch.equal(layers[:, :3], drafted)
    # layer 0 has no drafted conditioning: it is main-only's layer 0 exactly
    reference = codes_to_layers(MainOnlyDecoder(main, tokenizer)(h).codes)
    assert torch.equal(layers[:, 0], reference[:, 0])
    # plain agreement keeps the drafted tokens instead
    kept = SpeculativeDecoder(main, scripted, tokenizer, AgreementAcceptance(0.0))(h)
    assert torch.equal(codes_to_layers(kept.codes)[:, :3], drafted)


def test_corrected_agreement_below_threshold_and_per_layer_thresholds():
    main, _, tokenizer = tiny_stack()
    h = torch.randn(3, HIDDEN)
    scripted = ScriptedDraft(main, tokenizer, k=3)
    scripted.wrong_share = 0.25  # agreement 0.75 on every layer
    reference = MainOnlyDecoder(main, tokenizer)(h)
    rejected = SpeculativeDecoder(main, scripted, tokenizer, CorrectedAgreementAcceptance(0.8))(h)
    assert rejected.stats.accepted_layers.tolist() == [0] * 3
    assert torch.equal(rejected.codes, reference.codes)
    # per layer: L0 needs 0.5, L1 0.9 -> only L0 accepted
    rule = CorrectedAgreementAcceptance([0.5, 0.9, 0.1])
    assert (
        SpeculativeDecoder(main, scripted, tokenizer, rule)(h).stats.accepted_layers.tolist()
        == [1] * 3
    )
    with pytest.raises(ValueError, match="per-layer values"):
        SpeculativeDecoder(main, scripted, tokenizer, CorrectedAgreementAcceptance([0.5, 0.5]))(h)


@pytest.mark.parametrize("bad", [1.5, -0.1, [0.5, 2.0], [], "high"])
def test_threshold_outside_unit_interval_is_one_line(bad):
    for rule in (AgreementAcceptance, CorrectedAgreementAcceptance):
        with pytest.raises(ValueError, match=r"decoder\.acceptance\.threshold") as err:
            rule(bad)
        assert "\n" not in str(err.value)


def test_exact_stays_bit_identical_with_a_context_draft():
    main, _, tokenizer = tiny_stack()
    ctx_draft = ContextDraft(context_dim=32, num_draft_layers=3, tokens_per_layer=8).eval()
    h = torch.randn(6, HIDDEN)
    out = SpeculativeDecoder(main, ctx_draft, tokenizer, ExactAcceptance())(h)
    assert torch.equal(out.codes, MainOnlyDecoder(main, tokenizer)(h).codes)
    # the context draft reads main's context state, never h
    with torch.no_grad():
        expected = ctx_draft(main.context(h)).argmax(-1)
    only = DraftOnlyDecoder(main, ctx_draft, tokenizer)(h)
    assert torch.equal(codes_to_layers(only.codes), expected)


def test_context_draft_of_another_width_fails_early():
    main, _, tokenizer = tiny_stack()
    wrong = ContextDraft(context_dim=64, num_draft_layers=3, tokens_per_layer=8)
    with pytest.raises(ValueError, match=r"d_model is 32.*ckpt\.draft"):
        SpeculativeDecoder(main, wrong, tokenizer)


def test_context_draft_teacher_of_another_width_or_code_space_is_refused_naming_the_file():
    main, _, _ = tiny_stack()
    ok = ContextDraft(context_dim=32, num_draft_layers=3, tokens_per_layer=8)
    check_context_teacher(main, ok, "t.ckpt")  # the teacher it fits
    with pytest.raises(
        ValueError,
        match=r"t\.ckpt: teacher main's d_model is 32; set model\.module\.context_draft\.context_dim=32$",
    ):
        check_context_teacher(
            main, ContextDraft(context_dim=64, num_draft_layers=3, tokens_per_layer=8), "t.ckpt"
        )
    with pytest.raises(
        ValueError,
        match=r"^t\.ckpt: teacher main has levels=7 but model\.module\.context_draft\.levels=5",
    ):
        check_context_teacher(
            main,
            ContextDraft(context_dim=32, num_draft_layers=3, tokens_per_layer=8, levels=5),
            "t.ckpt",
        )


# ------------------------------------------------------------------------------------ baselines


@pytest.mark.parametrize("depth", [1, 3, 8])
def test_main_only_at_depth_m_decodes_the_prefix(depth):
    main, _, tokenizer = tiny_stack()
    h = torch.randn(4, HIDDEN)
    full = MainOnlyDecoder(main, tokenizer)(h)
    out = MainOnlyDecoder(main, tokenizer, depth=depth)(h)
    assert out.codes.shape[-1] == depth and out.stats.num_main_steps == depth
    assert torch.equal(out.codes, full.codes[..., :depth])  # greedy prefix = full run's prefix
    torch.testing.assert_close(
        out.actions, tokenizer.decode(full.codes, num_layers=depth), rtol=0, atol=0
    )


@pytest.mark.parametrize("depth", [0, 9, -1, 2.5, True])
def test_depth_outside_1_to_L_is_one_line(depth):
    main, _, tokenizer = tiny_stack()
    with pytest.raises(ValueError, match=r"decoder\.depth=.* in 1\.\.8") as err:
        MainOnlyDecoder(main, tokenizer, depth=depth)
    assert "\n" not in str(err.value)


def test_adaptive_depth_stops_where_a_layer_no_longer_moves_the_action():
    main, _, tokenizer = tiny_stack()
    h = torch.randn(5, HIDDEN)
    full = MainOnlyDecoder(main, tokenizer)(h)
    prefix = [tokenizer.decode(full.codes, num_layers=m) for m in range(1, 9)]
    change = torch.stack(
        [(prefix[m] - prefix[m - 1]).flatten(1).abs().amax(1) for m in range(1, 8)], 1
    )  # [B, 7]: change made by layer m = 1..7
    epsilon = float(change.median())
    out = AdaptiveDepthDecoder(main, tokenizer, epsilon=epsilon)(h)
    for b in range(5):
        below = (change[b] <= epsilon).nonzero()
        expected = int(below[0]) + 2 if len(below) else 8  # stops after the first small layer
        assert int(out.stats.decoded_layers[b]) == expected
        torch.testing.assert_close(out.actions[b], prefix[expected - 1][b])
    assert out.stats.num_main_steps == int(out.stats.decoded_layers.max())
    never = AdaptiveDepthDecoder(main, tokenizer, epsilon=0.0)(h)
    assert never.stats.decoded_layers.tolist() == [8] * 5
    torch.testing.assert_close(never.actions, full.actions)
    with pytest.raises(ValueError, match=r"decoder\.epsilon"):
        AdaptiveDepthDecoder(main, tokenizer, epsilon=-1)
    with pytest.raises(ValueError, match=r"decoder\.min_depth"):
        AdaptiveDepthDecoder(main, tokenizer, min_depth=9)


def test_draft_only_decodes_the_drafts_prefix_without_main_steps():
    main, draft, tokenizer = tiny_stack(draft_k=3)
    h = torch.randn(4, HIDDEN)
    out = DraftOnlyDecoder(main, draft, tokenizer)(h)
    drafted = draft.propose(h)
    assert torch.equal(codes_to_layers(out.codes), drafted)
    torch.testing.assert_close(out.actions, tokenizer.decode(out.codes, num_layers=3))
    assert out.stats.num_main_steps == 0 and not out.stats.speculated


# ------------------------------------------------------------------------------------ overhead


class HostReads:
    """Counts reads of tensor values by the host (item/int/bool and tolist/numpy/cpu calls)."""

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        self.count = 0
        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    outer.count += 1
                return func(*args, **(kwargs or {}))

        self.mode = Mode()
        for name in ("tolist", "numpy", "cpu"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *a, _original=original, **kw):
                outer.count += 1
                return _original(tensor, *a, **kw)

            monkeypatch.setattr(torch.Tensor, name, counted)

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def test_one_host_read_per_rsd_call_and_none_on_main_only(monkeypatch):
    main, draft, tokenizer = tiny_stack(draft_k=3)
    ctx_draft = ContextDraft(context_dim=32, num_draft_layers=3, tokens_per_layer=8).eval()
    h = torch.randn(3, HIDDEN)
    decoders = {
        "main_only": (MainOnlyDecoder(main, tokenizer), 0),
        "main_only depth 3": (MainOnlyDecoder(main, tokenizer, depth=3), 0),
        "draft_only": (DraftOnlyDecoder(main, draft, tokenizer), 0),
        "rsd exact": (SpeculativeDecoder(main, draft, tokenizer), 1),
        "rsd corrected, context draft": (
            SpeculativeDecoder(main, ctx_draft, tokenizer, CorrectedAgreementAcceptance(0.5)),
            1,
        ),
    }
    for name, (decoder, expected) in decoders.items():
        decoder(h)  # warm
        with HostReads(monkeypatch) as reads:
            decoder(h)
        assert reads.count == expected, f"{name}: {reads.count} host reads"
        monkeypatch.undo()


def test_compile_unavailable_falls_back_in_one_line(monkeypatch, caplog):
    main, draft, tokenizer = tiny_stack(draft_k=3)
    h = torch.randn(2, HIDDEN)
    reference = MainOnlyDecoder(main, tokenizer)(h).codes

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level("WARNING"):
        decoder = SpeculativeDecoder(main, draft, tokenizer, compile=True)
    assert decoder.compiled is False
    (record,) = [r for r in caplog.records if "decoder.compile" in r.getMessage()]
    assert "runs eager" in record.getMessage() and "\n" not in record.getMessage()
    assert torch.equal(decoder(h).codes, reference)  # eager, still main-only's codes


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_host_syncs_on_a_gpu_one_for_rsd_none_for_main_only():
    """CUDA's own sync detector: main-only never waits for the GPU; RSD waits once (min/max accepted)."""
    main, draft, tokenizer = (m.cuda() for m in tiny_stack(draft_k=3))
    h = torch.randn(2, HIDDEN, device="cuda")
    main_only = MainOnlyDecoder(main, tokenizer)
    rsd = SpeculativeDecoder(main, draft, tokenizer, CorrectedAgreementAcceptance(0.5))
    main_only(h), rsd(h)  # warm
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        main_only(h)  # raises on any synchronizing call
    finally:
        torch.cuda.set_sync_debug_mode(0)
    import warnings

    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rsd(h)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
    assert len(syncs) == 1, [str(w.message) for w in syncs]
