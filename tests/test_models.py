"""Main model KV-cache equivalence and draft shapes."""

import pytest
import torch

from rsdvla.models import DraftModel, MainModel

SMALL = dict(hidden_dim=32, d_model=64, n_layers=2, n_heads=4)


@pytest.fixture
def main_model():
    torch.manual_seed(0)
    return MainModel(**SMALL).eval()


def test_teacher_forced_logits_equal_cached_steps(main_model):
    h, tokens = torch.randn(3, 32), torch.randint(0, 7, (3, 8, 128))
    with torch.no_grad():
        full = main_model(h, tokens)
    state, steps, prev = main_model.start(h), [], None
    for layer in range(8):
        steps.append(main_model.step(state, prev))
        prev = tokens[:, layer]
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="already"):
        main_model.step(state, prev)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_verify_equals_full_pass_and_continues_after_truncation(main_model, k):
    h, tokens = torch.randn(2, 32), torch.randint(0, 7, (2, 8, 128))
    with torch.no_grad():
        full = main_model(h, tokens)
    logits, state = main_model.verify(h, tokens[:, :k], return_state=True)
    assert logits.shape == (2, k + 1, 128, 7)
    torch.testing.assert_close(logits, full[:, : k + 1], atol=1e-5, rtol=0)
    accepted = k - 1  # keep ctx + accepted drafted layers, continue with the next layer
    state.truncate(accepted + 1)
    nxt = main_model.step(state, tokens[:, accepted])
    torch.testing.assert_close(nxt, full[:, accepted + 1], atol=1e-5, rtol=0)


def test_verify_rejects_k_out_of_range(main_model):
    with pytest.raises(ValueError, match="0..7"):
        main_model.verify(torch.randn(1, 32), torch.zeros(1, 8, 128, dtype=torch.long))


def test_draft_predicts_k_layers_and_its_projection_trains():
    torch.manual_seed(0)
    draft = DraftModel(hidden_dim=4096, d_model=64, n_heads=4, num_draft_layers=3)
    h = torch.randn(2, 4096)
    logits = draft(h)
    assert logits.shape == (2, 3, 128, 7)
    assert draft.propose(h).shape == (2, 3, 128)
    logits.logsumexp(-1).sum().backward()
    assert draft.proj.weight.shape == (64, 4096) and draft.proj.weight.grad.abs().sum() > 0
