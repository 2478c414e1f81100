"""Fixed-seed cases for the numeric regression test; ``python tests/regression_cases.py`` rewrites
``tests/data/regression.pt`` (do that only for an intended numeric change, and say so in the commit)."""

from __future__ import annotations

from pathlib import Path

import torch

from rsdvla.models import DraftModel, MainModel
from rsdvla.tokenizer import RFSQTokenizer

FILE = Path(__file__).parent / "data" / "regression.pt"


def build_models_and_inputs():
    """The seeded tokenizer, main, draft and inputs ``actions [2, 8, 7]``, ``h [2, 16]`` of the cases."""
    torch.manual_seed(1234)
    tok = RFSQTokenizer(hidden=32).eval()
    main = MainModel(hidden_dim=16, d_model=32, n_layers=2, n_heads=4).eval()
    draft = DraftModel(hidden_dim=16, d_model=32, n_heads=4, num_draft_layers=3).eval()
    g = torch.Generator().manual_seed(99)
    actions = torch.rand(2, 8, 7, generator=g) * 2 - 1
    h = torch.randn(2, 16, generator=g)
    return tok, main, draft, actions, h


def compute_cases() -> dict[str, torch.Tensor]:
    tok, main, draft, actions, h = build_models_and_inputs()
    codes = tok.encode(actions)
    with torch.no_grad():
        tokens = codes.permute(0, 3, 1, 2).reshape(2, 8, 128)
        return {
            "tokenizer_codes": codes,
            "tokenizer_recon": tok.decode(codes),
            "tokenizer_coarse": tok.decode(codes, num_layers=2),
            "main_logits": main(h, tokens)[:, :, :4],
            "draft_logits": draft(h)[:, :, :4],
        }


if __name__ == "__main__":
    FILE.parent.mkdir(exist_ok=True)
    torch.save(compute_cases(), FILE)
    print(f"wrote {FILE}")
