"""RSD, draft-only and adaptive depth compose with truncated depth (``decoder.depth=m``)."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from test_decoding import HIDDEN, ScriptedDraft, tiny_stack

from rsdvla.decoding import (
    AdaptiveDepthDecoder,
    DraftOnlyDecoder,
    MainOnlyDecoder,
    SpeculativeDecoder,
)
from rsdvla.decoding.acceptance import AgreementAcceptance, ExactAcceptance
from rsdvla.decoding.rows import RowState

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("depth", [2, 3, 5, 8])
def test_exact_rsd_at_depth_m_equals_main_only_at_depth_m(depth):
    main, draft, tokenizer = tiny_stack(draft_k=7)
    h = torch.randn(6, HIDDEN)
    reference = MainOnlyDecoder(main, tokenizer, depth=depth)(h)
    scripted = ScriptedDraft(main, tokenizer, k=7)
    scripted.wrong_from = torch.randint(0, 8, (6,), generator=torch.Generator().manual_seed(depth))
    for candidate in (draft, scripted):
        out = SpeculativeDecoder(main, candidate, tokenizer, ExactAcceptance(), depth=depth)(h)
        assert out.codes.shape == reference.codes.shape
        torch.testing.assert_close(out.codes, reference.codes, rtol=0, atol=0)
        torch.testing.assert_close(out.actions, reference.actions, rtol=0, atol=0)
        assert out.stats.num_drafted_layers == min(7, depth - 1)
        if depth < 8:
            assert out.stats.decoded_layers.tolist() == [depth] * 6
    # a lossy rule at depth m decodes m layers too
    lossy = SpeculativeDecoder(main, draft, tokenizer, AgreementAcceptance(0.0), depth=depth)(h)
    assert lossy.codes.shape[-1] == depth


def test_skip_below_fallback_respects_depth():
    main, draft, tokenizer = tiny_stack(draft_k=7)
    h = torch.randn(2, HIDDEN)
    decoder = SpeculativeDecoder(main, draft, tokenizer, depth=3, skip_below=1.0)
    rows = [RowState(seed, accepted_ema=0.0) for seed in (0, 1)]  # forces the main-only fallback
    out = decoder(h, rows)
    assert not out.stats.speculated
    assert torch.equal(out.codes, MainOnlyDecoder(main, tokenizer, depth=3)(h).codes)


def test_depth_refusals_are_one_line():
    main, draft, tokenizer = tiny_stack(draft_k=7)
    with pytest.raises(ValueError, match=r"decoder\.depth=1 leaves no layer to draft"):
        SpeculativeDecoder(main, draft, tokenizer, depth=1)
    with pytest.raises(ValueError, match=r"decoder\.k=3 with decoder\.depth=3"):
        SpeculativeDecoder(main, draft, tokenizer, k=3, depth=3)
    with pytest.raises(ValueError, match=r"decoder\.depth=9.* in 1\.\.8"):
        SpeculativeDecoder(main, draft, tokenizer, depth=9)


def test_draft_only_and_adaptive_depth_at_depth_m():
    main, draft, tokenizer = tiny_stack(draft_k=7)
    h = torch.randn(3, HIDDEN)
    full_draft = DraftOnlyDecoder(main, draft, tokenizer)(h)
    out = DraftOnlyDecoder(main, draft, tokenizer, depth=3)(h)
    assert torch.equal(out.codes, full_draft.codes[..., :3])
    torch.testing.assert_close(out.actions, tokenizer.decode(out.codes, num_layers=3))
    never_stops = AdaptiveDepthDecoder(main, tokenizer, epsilon=0.0, depth=3)(h)
    reference = MainOnlyDecoder(main, tokenizer, depth=3)(h)
    assert torch.equal(never_stops.codes, reference.codes)
    torch.testing.assert_close(never_stops.actions, reference.actions)


@pytest.mark.parametrize("decoder", ["rsd", "draft_only", "adaptive_depth", "main_only"])
def test_depth_override_instantiates_for_every_decoder(decoder):
    main, draft, tokenizer = tiny_stack(draft_k=3)
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(overrides=[f"+decoder={decoder}", "decoder.depth=3"])
    built = instantiate(cfg.decoder, main=main, draft=draft, tokenizer=tokenizer)
    assert built(torch.randn(2, HIDDEN)).codes.shape[-1] <= 3


def test_offline_evaluation_of_exact_rsd_at_depth_3_matches_main_only_m3(synthetic_store, tmp_path):
    """The frontier's offline pass over an ``rsd_*_m3`` setting: the same figures as main-only m=3."""
    from types import SimpleNamespace

    from test_offline_evaluation import offline_cfg, tiny_models

    from rsdvla.data.store import HiddenStateStore
    from rsdvla.evaluation.offline import run_offline

    main, draft, tokenizer = tiny_models()
    normalizer = HiddenStateStore(synthetic_store).normalizer
    summaries = {}
    for name, decoder in (
        ("rsd_m3", SpeculativeDecoder(main, draft, tokenizer, depth=3)),
        ("main_only_m3", MainOnlyDecoder(main, tokenizer, depth=3)),
    ):
        stack = SimpleNamespace(
            main=main, draft=draft, tokenizer=tokenizer, normalizer=normalizer, decoder=decoder
        )
        summaries[name] = run_offline(
            offline_cfg(synthetic_store, tmp_path / name, max_batches=2), stack
        )
    rsd, m3 = summaries["rsd_m3"], summaries["main_only_m3"]
    assert rsd["mean_decoded_layers"] == m3["mean_decoded_layers"] == 3.0
    for key in ("token_agreement", "action_mse", "action_mse_vs_main_only"):
        assert rsd[key] == pytest.approx(m3[key], rel=0, abs=0)
    assert len(rsd["acceptance_per_layer"]) == 2  # drafts at most depth - 1 layers
