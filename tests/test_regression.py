"""Fixed-seed numeric regression: tokenizer, main and draft outputs against committed tensors."""

import torch
from regression_cases import FILE, compute_cases


def test_outputs_match_committed_tensors():
    expected = torch.load(FILE, weights_only=True)
    actual = compute_cases()
    assert expected.keys() == actual.keys()
    for name, value in expected.items():
        torch.testing.assert_close(
            actual[name], value, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )
