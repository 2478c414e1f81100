"""Checkpoint lineage: content hashes, the tokenizer/store chain, and the split evaluation uses."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config, write_synthetic_store
from helpers_ckpt import write_tiny_checkpoints
from omegaconf import open_dict

from rsdvla.checkpoints import (
    CheckpointError,
    backbone_settings,
    check_store_backbone,
    checkpoint_content_hash,
    content_hash,
    load_checkpoint,
)
from rsdvla.evaluation.stack import load_stack


def stack_config(tmp_path, ckpts: dict, *overrides: str):
    cfg = compose_config(
        "evaluate", ["backbone=state", "decoder=rsd", "device=cpu", *overrides], tmp_path / "run"
    )
    with open_dict(cfg):
        cfg.ckpt = {kind: str(path) for kind, path in ckpts.items()}
    return cfg


def test_content_hash_is_recorded_verifiable_and_sensitive(tmp_path):
    paths = write_tiny_checkpoints(tmp_path / "a", 16)
    ckpt = torch.load(paths["main"], weights_only=True)
    digest = checkpoint_content_hash(paths["main"])
    assert digest == ckpt["content_hash"] and digest.startswith("sha256:") and len(digest) == 71
    # the same weights and config hash the same; one changed weight or setting does not
    assert content_hash(ckpt["state_dict"], ckpt["hyper_parameters"]) == digest
    changed = {k: v.clone() for k, v in ckpt["state_dict"].items()}
    name = next(iter(changed))
    changed[name].view(-1)[0] += 1e-3
    assert content_hash(changed, ckpt["hyper_parameters"]) != digest
    assert content_hash(ckpt["state_dict"], {**ckpt["hyper_parameters"], "kind": "x"}) != digest
    # a file edited after training (recorded hash kept) is refused in one line
    ckpt["state_dict"] = changed
    torch.save(ckpt, tmp_path / "edited.ckpt")
    with pytest.raises(CheckpointError, match="edited.ckpt: recorded content_hash .* modified"):
        load_checkpoint(tmp_path / "edited.ckpt", "main")


def test_stack_refuses_a_tokenizer_main_was_not_trained_with(tmp_path):
    """Same shape, other weights: the 3.3x-error case of the issue, now a one-line refusal."""
    a = write_tiny_checkpoints(tmp_path / "a", 16, seed=0)
    b = write_tiny_checkpoints(tmp_path / "b", 16, seed=1)
    load_stack(stack_config(tmp_path, a))  # the matching set loads
    with pytest.raises(CheckpointError) as err:
        load_stack(stack_config(tmp_path, {**a, "tokenizer": b["tokenizer"]}))
    message = str(err.value)
    assert "\n" not in message
    assert str(a["main"]) in message and str(b["tokenizer"]) in message  # both files named
    assert "ckpt.tokenizer" in message
    with pytest.raises(CheckpointError, match=r"draft\.ckpt: draft was trained with tokenizer"):
        load_stack(stack_config(tmp_path, {**a, "draft": b["draft"]}))


def test_stack_refuses_a_draft_from_another_backbone_and_old_checkpoints(tmp_path):
    mixed = write_tiny_checkpoints(
        tmp_path / "m",
        16,
        backbone="oft|pool=last,attn=causal",
        draft_backbone="oft|pool=mean,attn=causal",
    )
    with pytest.raises(CheckpointError, match=r"pool=last vs pool=mean") as err:
        load_stack(stack_config(tmp_path, mixed))
    assert str(mixed["main"]) in str(err.value) and str(mixed["draft"]) in str(err.value)
    old = write_tiny_checkpoints(tmp_path / "old", 16, lineage=False)
    with pytest.raises(
        CheckpointError, match=r"main\.ckpt: no `hyper_parameters\.lineage`.*retrain"
    ):
        load_stack(stack_config(tmp_path, old))


def test_backbone_settings_name_what_differs():
    assert backbone_settings("openvla_oft:/m|pool=mean,attn=bidirectional") == {
        "name": "openvla_oft:/m",
        "pool": "mean",
        "attn": "bidirectional",
    }
    store = {"backbone": "oft|pool=mean,attn=bidirectional", "hidden_dim": 4096}
    check_store_backbone(store, store["backbone"], 4096, "main.ckpt", "store.h5", "fix")
    with pytest.raises(CheckpointError, match=r"\(attn=bidirectional vs attn=causal\); fix$"):
        check_store_backbone(store, "oft|pool=mean,attn=causal", 4096, "main.ckpt", "x", "fix")
    with pytest.raises(CheckpointError, match=r"H=4096 vs H=64"):
        check_store_backbone(store, store["backbone"], 64, "main.ckpt", "x", "fix")


def test_offline_evaluation_uses_the_split_main_was_trained_on(tmp_path, monkeypatch):
    """data.val_fraction/seed come from main's recorded config, not from the evaluation's."""
    import rsdvla.evaluate as evaluate

    store = write_synthetic_store(tmp_path / "store.h5", hidden_dim=16)
    ckpts = write_tiny_checkpoints(tmp_path / "ck", 16)
    for kind in ("main", "draft"):  # what train.py records: the resolved config and the store
        ckpt = torch.load(ckpts[kind], weights_only=True)
        hparams = ckpt["hyper_parameters"]
        hparams["config"] = {"data": {"path": str(store), "val_fraction": 0.25, "seed": 3}}
        hparams["lineage"]["store"]["path"] = str(store)
        from rsdvla.checkpoints import stamp

        torch.save(stamp(ckpt), ckpts[kind])
    seen = {}
    monkeypatch.setattr(
        "rsdvla.evaluation.offline.run_offline",
        lambda cfg, stack: seen.update(dict(cfg.data)) or {"speedup": 1.0},
    )
    cfg = stack_config(
        tmp_path, ckpts, "env=offline", f"data.path={store}", "data.val_fraction=0.5", "data.seed=0"
    )
    evaluate.run(cfg)
    assert (seen["val_fraction"], seen["seed"]) == (0.25, 3)
    # a store of another backbone than main's is refused at evaluation
    other = write_synthetic_store(tmp_path / "other.h5", hidden_dim=16)
    import h5py

    with h5py.File(other, "a") as f:
        f.attrs["backbone"] = "synthetic|pool=mean"
    cfg = stack_config(tmp_path, ckpts, "env=offline", f"data.path={other}")
    with pytest.raises(
        CheckpointError, match=r"main was trained on hidden states of backbone synthetic"
    ):
        evaluate.run(cfg)


def test_libero_evaluation_refuses_another_backbone_than_the_store_had(tmp_path):
    """``backbone.seed=1`` against heads trained on a seed-0 state store: refused before any episode."""
    from rsdvla.backbones import StateBackbone
    from rsdvla.cli import build
    from rsdvla.evaluation.libero.runner import build_policy

    trained_on = StateBackbone(seed=0).backbone_id
    ckpts = write_tiny_checkpoints(tmp_path / "ck", 512, backbone=trained_on)
    cfg = stack_config(tmp_path, ckpts, "env=libero")
    stack = load_stack(cfg)
    assert build_policy(cfg, stack, build(cfg.backbone)) is not None
    cfg = stack_config(tmp_path, ckpts, "env=libero", "backbone.seed=1")
    with pytest.raises(
        CheckpointError, match=r"seed0 but the configured backbone .* is state-.*seed1"
    ):
        build_policy(cfg, stack, build(cfg.backbone))


def test_one_compatibility_check_serves_train_decoders_and_distillation(tmp_path):
    """checkpoints.check_same is the one comparison behind train.py, the decoders and the teacher check."""
    from rsdvla.checkpoints import check_tokenizer_matches
    from rsdvla.decoding.compat import check_draft, check_main_tokenizer, check_teacher
    from rsdvla.models import DraftModel, MainModel
    from rsdvla.tokenizer import RFSQTokenizer

    paths = write_tiny_checkpoints(tmp_path / "ok", 16)
    tokenizer = RFSQTokenizer.from_checkpoint(paths["tokenizer"])
    main, draft = (
        MainModel.from_checkpoint(paths["main"]),
        DraftModel.from_checkpoint(paths["draft"]),
    )
    check_main_tokenizer(main, tokenizer)
    check_teacher(main, draft, "main.ckpt")
    assert check_draft(main, draft, None) == 2
    odd = write_tiny_checkpoints(tmp_path / "odd", 16, main_levels=7)
    main7 = MainModel.from_checkpoint(odd["main"])
    with pytest.raises(
        CheckpointError, match=r"^tokenizer has levels=5 but main\.levels=7; use the tokenizer"
    ):
        check_main_tokenizer(main7, tokenizer)
    with pytest.raises(
        CheckpointError, match=r"tokenizer has levels=5 but model\.module\.main\.levels=7"
    ):
        check_tokenizer_matches(tokenizer.config, main7.config, "tok.ckpt", "model.module.main")
    with pytest.raises(CheckpointError, match=r"^main has levels=7 but draft\.levels=5"):
        check_draft(main7, draft, None)
    with pytest.raises(
        CheckpointError, match=r"^t\.ckpt: teacher main has levels=7 but draft\.levels=5"
    ):
        check_teacher(main7, draft, "t.ckpt")
    with pytest.raises(CheckpointError, match=r"num_draft_layers=4 must be in 1\.\.3"):
        check_tokenizer_matches(
            tokenizer.config,
            type("C", (), {"levels": 5, "tokens_per_layer": 32, "num_draft_layers": 4})(),
            "tok.ckpt",
            "draft",
        )
