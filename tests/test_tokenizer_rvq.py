"""Chunk residual VQ tokenizer: round trips at every (G, C), prefix decode, library cross-checks,
checkpoints of either family through train.py, and refusals of the other family."""

from __future__ import annotations

import pytest
import torch
from vector_quantize_pytorch import ResidualFSQ as LibraryResidualFSQ

from rsdvla.checkpoints import CheckpointError
from rsdvla.tokenizer import (
    ChunkRVQTokenizer,
    ResidualFSQ,
    RFSQTokenizer,
    load_tokenizer,
)

SHAPES = [(1, 256), (2, 64), (4, 16)]  # (G, C)


def smooth_chunks(n: int, seed: int = 0) -> torch.Tensor:
    """``[n, 8, 7]`` smooth action chunks in [-1, 1] (sinusoids of random phase and frequency)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(8).float()[None, :, None]
    phase = torch.rand(n, 1, 7, generator=g) * 6.28
    freq = 0.1 + 0.3 * torch.rand(n, 1, 7, generator=g)
    return 0.8 * torch.sin(freq * t + phase)


def trained_rvq(groups: int, codebook: int, steps: int = 150, layers: int = 4) -> ChunkRVQTokenizer:
    torch.manual_seed(0)
    tok = ChunkRVQTokenizer(
        groups=groups, codebook_size=codebook, num_layers=layers, latent_dim=16, hidden=64
    )
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    data = smooth_chunks(2048)
    tok.train()
    for step in range(steps):
        batch = data[(step * 256) % 2048 :][:256]
        recon, _, aux = tok.loss(batch)
        loss = torch.nn.functional.mse_loss(recon, batch) + aux
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tok.eval()


@pytest.mark.parametrize(("groups", "codebook"), SHAPES)
def test_round_trip_and_prefix_decode_at_every_shape(groups, codebook):
    tok = trained_rvq(groups, codebook)
    x = smooth_chunks(300, seed=1)
    codes = tok.encode(x)
    assert codes.shape == (300, groups, 4) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < codebook
    assert tok.tokens_per_layer == groups and tok.levels == tok.vocab_size == codebook
    recon, forward_codes = tok(x)  # eval forward: codes alone reproduce it
    assert torch.equal(forward_codes, codes)
    assert torch.equal(tok.decode(codes), recon)
    # the layer layout round-trips and a layer is G tokens
    layers = tok.codes_to_layers(codes)
    assert layers.shape == (300, 4, groups)
    assert torch.equal(tok.layers_to_codes(layers), codes)
    # prefix decode = the decoder applied to the sum of the first m codebook vectors, computed
    # here from the library's codebooks by hand (not through its decode helpers)
    books = tok.quantizer.codebooks  # [L, C, d]
    errors = []
    for m in range(1, 5):
        latent = sum(books[layer][codes[..., layer]] for layer in range(m))  # [B, G, d]
        expected = tok.decoder(latent.reshape(300, -1)).view(300, 8, 7)
        torch.testing.assert_close(tok.decode(codes, num_layers=m), expected)
        # only the prefix matters: garbage in the later layers changes nothing
        scrambled = codes.clone()
        scrambled[..., m:] = (scrambled[..., m:] + 7) % codebook
        assert torch.equal(tok.decode(scrambled, num_layers=m), tok.decode(codes, num_layers=m))
        errors.append(float(torch.nn.functional.mse_loss(tok.decode(codes, num_layers=m), x)))
    # quantize dropout trained every prefix: more layers reconstruct better
    assert errors[-1] < 0.75 * errors[0], errors


def test_codes_are_the_nearest_codewords_of_each_residual():
    """Encoding is residual nearest-neighbour search over the codebooks (checked by hand)."""
    tok = trained_rvq(2, 64, steps=60)
    x = smooth_chunks(200, seed=2)
    codes = tok.encode(x)
    residual = tok._latent(x)  # [B, G, d]
    for layer, book in enumerate(tok.quantizer.codebooks):
        nearest = torch.cdist(residual.reshape(-1, residual.shape[-1]), book).argmin(-1)
        agree = (nearest.view_as(codes[..., layer]) == codes[..., layer]).float().mean()
        assert agree > 0.99, f"layer {layer}: {agree:.3f} of the codes are the nearest codeword"
        residual = residual - book[codes[..., layer]]


def test_our_residual_fsq_quantizes_as_the_library_residual_fsq():
    """Independent cross-check of our RFSQ quantizer: the library's ResidualFSQ on the same grid.

    The library scales layer l by K^-l (ours: (K-1)^-l, a setting) and soft-clamps its input
    first; with its scales copied into ours and that clamp applied, both must give the same
    quantized latent and the same per-dimension levels.
    """
    levels, dims, layers = 7, 4, 3
    lib = LibraryResidualFSQ(dim=dims, levels=[levels] * dims, num_quantizers=layers).eval()
    ours = ResidualFSQ(num_layers=layers, levels=levels)
    ours.log_scales.copy_(lib.scales[:, 0].log())
    z = torch.rand(4096, dims) * 2.4 - 1.2
    with torch.no_grad():
        lib_out, lib_indices = lib(z.unsqueeze(1))
        clamp = 1 + 1 / (levels - 1)
        ours_out, ours_codes = ours(torch.tanh(z / clamp) * clamp)
    torch.testing.assert_close(ours_out, lib_out[:, 0], atol=1e-6, rtol=0)
    for layer, fsq in enumerate(lib.layers):
        lib_levels = fsq.indices_to_level_indices(lib_indices[:, 0, layer]).long()  # [B, D]
        assert torch.equal(lib_levels, ours_codes[..., layer])


def test_settings_the_latent_cannot_hold_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"groups=3 must be >= 1 and divide .*latent_dim=16"):
        ChunkRVQTokenizer(groups=3, latent_dim=16)
    with pytest.raises(ValueError, match=r"codebook_size=1 must be >= 2"):
        ChunkRVQTokenizer(codebook_size=1)
    tok = ChunkRVQTokenizer(groups=2, codebook_size=16, num_layers=3, latent_dim=8).eval()
    with pytest.raises(ValueError, match=r"actions: shape \(2, 4, 7\).*chunk_size"):
        tok.encode(torch.zeros(2, 4, 7))
    with pytest.raises(ValueError, match=r"codes: values must lie in 0\.\.15"):
        tok.decode(torch.full((1, 2, 3), 16))
    with pytest.raises(ValueError, match=r"codes: shape \(1, 4, 3\).*groups=2"):
        tok.decode(torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"num_layers must be in 1\.\.3"):
        tok.decode(torch.zeros(1, 2, 3, dtype=torch.long), num_layers=4)


@pytest.mark.integration
def test_train_py_writes_a_standalone_rvq_checkpoint_and_main_reads_its_code_space(
    tmp_path, synthetic_store
):
    """``train.py model=tokenizer_rvq``, then main and draft on it: N, vocabulary, L and family
    come from the tokenizer; loading as the other family, or a stack of mixed families, is refused."""
    from conftest import train_on_store

    rvq = [
        "model=tokenizer_rvq",
        "model.module.tokenizer.groups=2",
        "model.module.tokenizer.codebook_size=32",
        "model.module.tokenizer.num_layers=4",
        "model.module.tokenizer.hidden=32",
    ]
    out = train_on_store(tmp_path, synthetic_store, *rvq, model="tokenizer_rvq", run="tok")
    path = out["exported"]
    tok = load_tokenizer(path)
    assert isinstance(tok, ChunkRVQTokenizer) and tok.family == "rvq"
    assert (tok.tokens_per_layer, tok.levels, tok.num_layers) == (2, 32, 4)
    with pytest.raises(CheckpointError, match=r"a rvq tokenizer .* where a rfsq one is required"):
        RFSQTokenizer.from_checkpoint(path)
    assert ChunkRVQTokenizer.from_checkpoint(path).content_hash == tok.content_hash

    main_out = train_on_store(
        tmp_path, synthetic_store, f"tokenizer.ckpt={path}", model="main_cpu", run="main"
    )
    from rsdvla.models import MainModel

    main = MainModel.from_checkpoint(main_out["exported"])
    cfg = main.config
    assert (cfg.tokens_per_layer, cfg.levels, cfg.num_code_layers) == (2, 32, 4)
    assert cfg.tokenizer_family == "rvq"

    # an RFSQ tokenizer with main's shape numbers is still another family: refused in one line
    from rsdvla.checkpoints import check_tokenizer_matches

    rfsq = RFSQTokenizer(chunk_size=2, latent_dim=1, num_layers=4, levels=32)
    with pytest.raises(
        CheckpointError, match=r"tokenizer has family=rfsq but .*tokenizer_family=rvq"
    ):
        check_tokenizer_matches(rfsq.config, main.config, "rfsq.ckpt", "main.ckpt: main")

    # a draft on the same tokenizer, then the whole stack offline: RSD with a tree of width 2
    from conftest import offline_eval_config
    from omegaconf import open_dict

    import rsdvla.evaluate

    draft_out = train_on_store(
        tmp_path,
        synthetic_store,
        f"tokenizer.ckpt={path}",
        f"model.module.teacher_ckpt={main_out['exported']}",
        "model.module.draft.num_draft_layers=3",
        model="draft_cpu",
        run="draft",
    )
    ckpts = {"tokenizer": path, "main": main_out["exported"], "draft": draft_out["exported"]}
    cfg = offline_eval_config(tmp_path, synthetic_store, ckpts)
    with open_dict(cfg):
        cfg.decoder.tree_width = 2
    summary = rsdvla.evaluate.run(cfg)
    assert summary["token_agreement"] == 1.0 and summary["action_mse_vs_main_only"] == 0.0
    assert len(summary["acceptance_per_layer"]) == 3

    # the evaluation refuses an RFSQ tokenizer for this RVQ stack, naming the family
    rfsq_path = train_on_store(tmp_path, synthetic_store, run="rfsq")["exported"]
    cfg = offline_eval_config(tmp_path, synthetic_store, {**ckpts, "tokenizer": rfsq_path})
    with pytest.raises(
        CheckpointError, match=r"tokenizer has family=rfsq but .*main\.tokenizer_family=rvq"
    ):
        rsdvla.evaluate.run(cfg)
