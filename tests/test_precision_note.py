"""`exact` under precision=bfloat16 is said, at run time, not to be bit-identical on a CPU;
float32 `exact` is checked to be bit-identical here, on the machine the tests run on."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from helpers_ckpt import write_tiny_checkpoints
from omegaconf import open_dict

from rsdvla.evaluation.stack import load_stack

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _stack(tmp_path, ckpts, *overrides):
    cfg = compose_config("evaluate", ["backbone=state", "device=cpu", *overrides], tmp_path / "run")
    with open_dict(cfg):
        cfg.ckpt = {kind: str(p) for kind, p in ckpts.items()}
    return load_stack(cfg)


def test_bf16_exact_prints_one_line_and_float32_exact_is_bit_identical_here(tmp_path, capsys):
    ckpts = write_tiny_checkpoints(tmp_path / "ck", 16)
    _stack(tmp_path, ckpts, "decoder=rsd", "precision=bfloat16")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        "note: precision=bfloat16 with `exact` acceptance: not bit-identical to bf16 main-only on a CPU"
    )
    for overrides in (
        ["decoder=rsd", "precision=float32"],
        ["decoder=main_only", "precision=bfloat16"],
        ["decoder=rsd", "decoder/acceptance=agreement", "precision=bfloat16"],
    ):
        _stack(tmp_path, ckpts, *overrides)
        assert "note:" not in capsys.readouterr().err
    stack = _stack(tmp_path, ckpts, "decoder=rsd", "precision=float32")
    h = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    for row in h.split(1):  # batch 1, the claim docs/architecture.md makes for float32
        assert torch.equal(stack.decoder(row).codes, stack.baseline(row).codes)
