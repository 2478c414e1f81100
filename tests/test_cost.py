"""Machine-independent cost (rsdvla.decoding.cost) and the roofline prediction (rsdvla.decoding.roofline).

The hand counts below read the models' own parameter shapes (``nn.Linear`` modules), not the
cost code's formulas; the pass counts are those the decoders actually made (wrapped calls).
"""

import pytest
import torch
from conftest import tiny_decoding_models
from torch import nn

from rsdvla.decoding import AgreementAcceptance, MainOnlyDecoder, SpeculativeDecoder
from rsdvla.decoding.cost import call_passes, main_pass, per_chunk
from rsdvla.decoding.roofline import DEVICES, call_seconds, get_device, pass_seconds
from rsdvla.models import ContextDraft


def linear_macs(module: nn.Module) -> int:
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def test_a_main_step_costs_what_its_layers_hold():
    main, _, _ = tiny_decoding_models()
    cfg = main.config
    d, n, k = cfg.d_model, cfg.tokens_per_layer, cfg.levels
    j = 2  # the step predicting layer 2: attends to 3 positions, embeds layer 1's N codes
    blocks = sum(p.numel() for p in main.blocks.parameters())
    head = main.heads.weight[j].numel() + main.heads.bias[j].numel()
    ln_f = sum(p.numel() for p in main.ln_f.parameters())
    params = blocks + ln_f + d + head + n * d  # + the position row and N embedding rows
    macs = linear_macs(main.blocks) + main.heads.weight[j].numel()
    attention = len(main.blocks) * 2 * d * (j + 1)
    step = main_pass(cfg, j, 1, "step", False, 4)
    assert step.weight_params == params
    assert step.flops == 2 * (macs + attention) + n * d
    assert step.weight_bytes == 4 * params and step.positions == 1
    first = main_pass(cfg, 0, 1, "step", True, 2)  # step 0: the context, no embedding
    ctx = main.ctx.weight.numel() + main.ctx.bias.numel()
    head0 = main.heads.weight[0].numel() + main.heads.bias[0].numel()
    assert first.weight_params == blocks + ln_f + d + head0 + ctx
    assert first.weight_bytes == 2 * first.weight_params
    assert (
        first.flops
        == 2 * (linear_macs(main.blocks) + main.heads.weight[0].numel() + len(main.blocks) * 2 * d)
        + 2 * main.ctx.weight.numel()
    )
    assert k * n == main.heads.weight.shape[-1]


def test_a_context_draft_pass_costs_its_two_products():
    main, _, _ = tiny_decoding_models()
    draft = ContextDraft(
        context_dim=main.config.d_model, hidden=16, num_draft_layers=3, tokens_per_layer=32
    )
    decoder = SpeculativeDecoder(main, draft, tiny_decoding_models()[2], AgreementAcceptance(0.0))
    result = decoder(torch.randn(1, main.config.hidden_dim))
    first = call_passes(decoder, result.stats)[0]
    params = sum(p.numel() for p in draft.parameters()) + sum(
        p.numel() for p in main.ctx.parameters()
    )
    assert first.kind == "draft" and first.weight_params == params
    assert first.flops == 2 * (linear_macs(draft) + main.ctx.weight.numel())


class Counted:
    """Counts calls of ``obj.name`` (wrapping the bound method)."""

    def __init__(self, obj, name: str):
        self.calls, inner = 0, getattr(obj, name)

        def wrapper(*args, **kwargs):
            self.calls += 1
            return inner(*args, **kwargs)

        setattr(obj, name, wrapper)


@pytest.mark.parametrize("setting", ["main_only", "main_only_m3", "rsd", "rsd_m3", "rsd_exact"])
def test_counted_passes_are_the_passes_the_decoder_made(setting):
    main, draft, tokenizer = tiny_decoding_models()
    steps, verifies = Counted(main, "step"), Counted(main, "verify")
    drafts = Counted(draft, "forward")
    depth = 3 if setting.endswith("m3") else None
    if setting.startswith("main_only"):
        decoder = MainOnlyDecoder(main, tokenizer, depth=depth)
    else:
        rule = AgreementAcceptance(0.0) if setting != "rsd_exact" else None
        decoder = SpeculativeDecoder(main, draft, tokenizer, rule, depth=depth)
    torch.manual_seed(1)
    h = torch.randn(1, main.config.hidden_dim)
    result = decoder(h)
    counts = per_chunk(call_passes(decoder, result.stats), batch=1)
    assert counts["step_passes"] == steps.calls
    assert counts["verify_passes"] == verifies.calls
    assert counts["draft_passes"] == drafts.calls
    assert counts["passes"] == steps.calls + verifies.calls + drafts.calls
    expected_steps = {"main_only": 8, "main_only_m3": 3, "rsd": 8 - 1 - 3, "rsd_m3": 0}
    if setting in expected_steps:  # accept-all RSD: k drafted layers + the bonus, then steps
        assert steps.calls == expected_steps[setting]


def test_roofline_is_the_max_of_compute_and_memory_plus_launches():
    main, _, _ = tiny_decoding_models()
    p = main_pass(main.config, 1, 1, "step", False, 2)
    gpu = get_device("H100")
    assert pass_seconds(p, 1, gpu, "bfloat16", launch_s=0.0) == pytest.approx(
        max(p.flops / 989.4e12, p.weight_bytes / 3.35e12)
    )
    huge = 10**9  # a batch large enough to be compute-bound
    assert pass_seconds(p, huge, gpu, "bfloat16", launch_s=0.0) == pytest.approx(
        huge * p.flops / 989.4e12
    )
    assert call_seconds([p, p], 1, gpu, "bfloat16", 1e-6) == pytest.approx(
        2 * (p.weight_bytes / 3.35e12 + p.kernels * 1e-6)
    )
    assert {"A100", "H100"} <= set(DEVICES)


def test_an_unknown_device_is_refused_naming_the_known_ones():
    with pytest.raises(
        ValueError, match=r"^--gpu='V100' is not in the roofline table \(known: A100, H100"
    ):
        get_device("V100", "--gpu")


def test_amdahl_bound_of_a_decoder_behind_a_7b_backbone():
    from rsdvla.decoding.roofline import OFT_STEP_S, amdahl_step_speedup, predicted_speed

    assert amdahl_step_speedup(0.070, 0.010, 0.005) == pytest.approx(0.080 / 0.075)
    main, _, tokenizer = tiny_decoding_models()
    steps = [main_pass(main.config, j, 1, "step", j == 0, 4) for j in range(8)]
    out = predicted_speed({"a": [steps], "b": [steps[:3]]}, "b", ["a"], 1, "float32")
    a100 = out["A100"]
    ref_s, set_s = a100["call_ms"]["a"] / 1e3, a100["call_ms"]["b"] / 1e3
    assert a100["speedup"]["a"] == pytest.approx(ref_s / set_s)
    assert a100["oft_step_speedup"]["a"] == pytest.approx(
        (OFT_STEP_S["A100"] + ref_s) / (OFT_STEP_S["A100"] + set_s)
    )
    assert 1 < a100["oft_step_speedup"]["a"] < a100["oft_step_bound"]["a"] < a100["speedup"]["a"]


@pytest.mark.parametrize("context", [False, True])
def test_a_call_counted_at_openvla_size_costs_what_openvla_size_models_hold(context):
    """The tiny stack's call recounted with ``at_openvla_size`` equals the count of the same
    stats on models actually built at the default (OpenVLA-OFT) widths with the tiny code space;
    and that count's weights are those models' parameters, read off ``nn.Module``s."""
    from rsdvla.decoding.cost import at_openvla_size
    from rsdvla.models import DraftModel, MainModel

    main, draft, tokenizer = tiny_decoding_models()
    if context:
        draft = ContextDraft(context_dim=main.config.d_model, hidden=16, tokens_per_layer=32)
    decoder = SpeculativeDecoder(main, draft, tokenizer, AgreementAcceptance(0.0))
    torch.manual_seed(2)
    stats = decoder(torch.randn(1, main.config.hidden_dim)).stats
    code = dict(tokens_per_layer=32, num_draft_layers=3)
    big_main = MainModel(tokens_per_layer=32)  # every width at its default
    big_draft = ContextDraft(**code) if context else DraftModel(**code)
    big = SpeculativeDecoder(big_main, big_draft, tokenizer, AgreementAcceptance(0.0))
    resized = call_passes(decoder, stats, "bfloat16", at_openvla_size)
    assert resized == call_passes(big, stats, "bfloat16")
    assert (
        big_main.config.hidden_dim == 4096 and at_openvla_size(main.config).tokens_per_layer == 32
    )
    # RSD's draft pass also computes main's context projection (start(h))
    draft_params = sum(p.numel() for p in (*big_draft.parameters(), *big_main.ctx.parameters()))
    assert resized[0].kind == "draft" and resized[0].weight_params == draft_params
    assert resized[0].weight_bytes == 2 * resized[0].weight_params
