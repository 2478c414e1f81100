"""RFSQ tokenizer: codes alone decode, residual layers refine, bad codes are refused."""

import pytest
import torch

from rsdvla.tokenizer import ResidualFSQ, RFSQTokenizer, codes_to_layers, layers_to_codes


def _actions(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 8, 7, generator=g) * 2 - 1
    a[..., 6] = torch.where(torch.rand(n, 1, generator=g) > 0.5, 1.0, -1.0)
    return a


def test_decode_of_codes_equals_forward_reconstruction_exactly():
    torch.manual_seed(0)
    tok = RFSQTokenizer().eval()
    actions = _actions()
    recon, codes = tok(actions)
    assert codes.shape == (64, 8, 16, 8) and codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() <= 6
    assert torch.equal(tok.decode(codes), recon)
    assert torch.equal(tok.encode(actions), codes)


def test_quantizer_error_shrinks_with_every_layer():
    q = ResidualFSQ(num_layers=8, levels=7)
    z = torch.rand(1000, 16) * 2 - 1
    _, codes = q(z)
    errors = [(q.dequantize(codes, n) - z).abs().max().item() for n in range(1, 9)]
    assert all(b < a for a, b in zip(errors, errors[1:], strict=False))
    # half a grid step of the last layer: 6^-8 / 2 bounds the final error (plus float rounding)
    assert errors[-1] <= 6.0**-8 + 1e-6
    assert errors[0] <= 1 / 6 + 1e-6


def test_quantizer_passes_gradients_straight_through():
    q = ResidualFSQ(num_layers=3, levels=7, learn_scales=True)
    z = (torch.rand(4, 16) * 2 - 1).requires_grad_()
    z_hat, _ = q(z)
    z_hat.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    # learned scales get a gradient from every layer (a detached scale would give None or zeros)
    q.log_scales.grad = None
    (q(z.detach())[0] ** 2).sum().backward()
    grad = q.log_scales.grad
    assert grad.shape == (3,) and torch.isfinite(grad).all() and (grad != 0).all()


def test_codes_out_of_range_are_refused():
    tok = RFSQTokenizer()
    codes = torch.zeros(1, 8, 16, 8, dtype=torch.long)
    codes[0, 0, 0, 0] = 7
    with pytest.raises(ValueError, match="0..6"):
        tok.decode(codes)


def test_layer_token_layout_roundtrips():
    codes = torch.randint(0, 7, (3, 8, 16, 8))
    tokens = codes_to_layers(codes)
    assert tokens.shape == (3, 8, 128)
    assert torch.equal(tokens[1, 2, 5 * 16 + 3], codes[1, 5, 3, 2])  # token n = t*D + d
    assert torch.equal(layers_to_codes(tokens, chunk_size=8), codes)


def test_tokenizer_learns_a_fine_reconstruction_and_coarse_layers_are_worse():
    torch.manual_seed(0)
    tok = RFSQTokenizer(hidden=128)
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    data = _actions(2048, seed=1)
    for _ in range(400):
        batch = data[torch.randint(0, len(data), (256,))]
        loss = torch.nn.functional.mse_loss(tok(batch)[0], batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    held_out = _actions(512, seed=2)
    mse = torch.nn.functional.mse_loss(tok.decode(tok.encode(held_out)), held_out).item()
    coarse = torch.nn.functional.mse_loss(
        tok.decode(tok.encode(held_out), num_layers=1), held_out
    ).item()
    assert mse < 1e-3 and coarse > mse
