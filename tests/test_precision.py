"""``precision=bfloat16``: decoding in bf16 keeps RSD's contract and standardizes in float32."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from helpers_ckpt import write_tiny_checkpoints
from test_decoding import HIDDEN, ScriptedDraft, tiny_stack

from rsdvla.decoding import (
    CorrectedAgreementAcceptance,
    ExactAcceptance,
    MainOnlyDecoder,
    SpeculativeDecoder,
)
from rsdvla.decoding.precision import cast_for_decoding, resolve_precision
from rsdvla.evaluation.stack import load_stack
from rsdvla.models import ContextDraft, MainModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def bf16_stack(seed: int = 0):
    main, draft, tokenizer = tiny_stack(seed=seed)
    context_draft = ContextDraft(
        context_dim=main.config.d_model,
        num_draft_layers=7,
        tokens_per_layer=main.config.tokens_per_layer,
        levels=main.config.levels,
    ).eval()
    cast_for_decoding(torch.bfloat16, main, draft, context_draft)
    return main, draft, context_draft, tokenizer


@pytest.mark.parametrize("batch", [1, 6])
def test_exact_rsd_equals_main_only_in_bfloat16(batch):
    """The verify pass (k+1 positions in one bf16 pass) and bf16 single steps choose the same codes.

    At batch 1 they are bit-identical on these weights. At batch > 1 the verify pass and single
    steps may run different matrix kernels, and bf16 rounding of their different summation orders
    can flip a near-tied argmax (docs/architecture.md, "Exactness"; docs/benchmarks.md measures it),
    so there the test asserts near-identity and that the oracle still has its layers accepted
    almost everywhere, not bit-identity.
    """
    main, draft, context_draft, tokenizer = bf16_stack()
    assert main.blocks[0].mlp[0].weight.dtype == torch.bfloat16
    h = torch.randn(batch, HIDDEN, generator=torch.Generator().manual_seed(batch))  # float32
    reference = MainOnlyDecoder(main, tokenizer)(h)
    assert reference.actions.dtype == torch.float32  # the tokenizer stays float32
    oracle = ScriptedDraft(main, tokenizer, k=7)
    oracle.wrong_from = torch.full((batch,), 8)
    for k in (1, 3, 7):
        for candidate in (draft, context_draft, oracle):
            out = SpeculativeDecoder(main, candidate, tokenizer, ExactAcceptance(), k=k)(h)
            same = (out.codes == reference.codes).float().mean().item()
            if batch == 1:
                assert same == 1.0, (k, type(candidate).__name__)
            else:
                assert same >= 0.95, (k, type(candidate).__name__, same)
        accepted = SpeculativeDecoder(main, oracle, tokenizer, ExactAcceptance(), k=k)(h)
        if batch == 1:
            assert accepted.stats.accepted_layers.tolist() == [k]
        else:
            assert accepted.stats.accepted_layers.float().mean().item() >= k - 1, k


def test_corrected_agreement_runs_in_bfloat16_and_keeps_layer_0():
    main, _, context_draft, tokenizer = bf16_stack(seed=1)
    h = torch.randn(4, HIDDEN)
    reference = MainOnlyDecoder(main, tokenizer)(h)
    rule = CorrectedAgreementAcceptance(threshold=0.0)
    out = SpeculativeDecoder(main, context_draft, tokenizer, rule, k=3)(h)
    assert out.stats.accepted_layers.tolist() == [3] * 4
    assert torch.equal(out.codes[..., 0], reference.codes[..., 0])  # main's own choice at layer 0


def test_bfloat16_model_standardizes_hidden_states_in_float32():
    """A large static offset with small variation: bf16 arithmetic on ``h - mean`` would erase it."""
    torch.manual_seed(0)
    main = MainModel(hidden_dim=HIDDEN, d_model=32, n_layers=1, n_heads=4, tokens_per_layer=8)
    train = 1000.0 + 0.01 * torch.randn(256, HIDDEN)
    main.input_norm.set_statistics(train)
    h = 1000.0 + 0.01 * torch.randn(5, HIDDEN)
    full = main.eval().context(h)
    cast_for_decoding(torch.bfloat16, main)
    assert main.input_norm.mean.dtype == torch.float32
    assert main.input_norm.inv_std.dtype == torch.float32
    assert main.ctx.weight.dtype == torch.bfloat16
    half = main.context(h)
    assert half.dtype == torch.bfloat16
    # bf16 rounding of the inputs and weights only (standardized inputs are O(1))
    assert (half.float() - full).abs().mean() < 0.05
    # standardizing in bf16 erases the signal: h and mean round to the same bf16 (ulp(1000) = 4)
    naive = (h.bfloat16() - main.input_norm.mean.bfloat16()) * main.input_norm.inv_std.bfloat16()
    exact = (h - main.input_norm.mean) * main.input_norm.inv_std
    assert (naive.float() - exact).abs().mean() > 0.5


def test_load_stack_casts_main_and_draft_and_refuses_unknown_precisions(tmp_path):
    ckpts = write_tiny_checkpoints(tmp_path / "ck", 16)
    paths = [f"ckpt.{kind}={path}" for kind, path in ckpts.items()]
    cfg = compose_config(
        "evaluate", ["env=offline", "device=cpu", "precision=bfloat16", *paths], tmp_path / "run"
    )
    stack = load_stack(cfg)
    assert stack.precision == "bfloat16"
    assert stack.main.ctx.weight.dtype == torch.bfloat16
    assert stack.draft.proj.weight.dtype == torch.bfloat16
    assert next(stack.tokenizer.parameters()).dtype == torch.float32
    h = torch.randn(3, 16)
    assert torch.equal(stack.decoder(h).codes, stack.baseline(h).codes)  # exact RSD, bf16 both
    bad = compose_config(
        "evaluate", ["env=offline", "device=cpu", "precision=fp8", *paths], tmp_path / "run2"
    )
    with pytest.raises(
        ValueError,
        match=r"^precision='fp8' is not a decoding precision; use one of float32, bfloat16$",
    ):
        load_stack(bad)


def test_resolve_precision_names_the_field():
    assert resolve_precision("float32") is torch.float32
    with pytest.raises(ValueError, match=r"^frontier\.precision='half'"):
        resolve_precision("half", field="frontier.precision")


def test_a_libero_run_records_a_non_default_precision_so_a_resume_in_another_is_refused(tmp_path):
    from rsdvla.evaluation.libero.runner import run_identity

    ckpts = write_tiny_checkpoints(tmp_path / "ck", 16)
    paths = [f"ckpt.{kind}={path}" for kind, path in ckpts.items()]
    identities = {}
    for precision in ("float32", "bfloat16"):
        cfg = compose_config(
            "evaluate", ["device=cpu", f"precision={precision}", *paths], tmp_path / precision
        )
        identities[precision] = run_identity(cfg, load_stack(cfg), "state")
    assert "precision" not in identities["float32"]  # as recorded before the option existed
    assert identities["bfloat16"]["precision"] == "bfloat16"
    assert {k: v for k, v in identities["bfloat16"].items() if k != "precision"} == identities[
        "float32"
    ]
    assert set(identities["float32"]["checkpoints"]) == {"tokenizer", "main", "draft"}
