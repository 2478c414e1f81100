"""Backbones: OpenVLA preprocessing on fixed inputs, state/tiny behaviour, openvla_oft CPU refusal, configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rsdvla.backbones import OpenVLAOFTBackbone, StateBackbone, TinyVLABackbone
from rsdvla.backbones.openvla_oft import pool_prompt_hidden
from rsdvla.backbones.preprocessing import (
    center_crop,
    model_image,
    openvla_prompt,
    policy_image,
    rotate_180,
)
from rsdvla.backbones.state import instruction_embedding

CONF = Path(__file__).resolve().parents[1] / "conf"


def batch_of(size: int, seed: int = 0, object_dim: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "primary": rng.integers(0, 256, (size, 224, 224, 3), dtype=np.uint8),  # policy images
        "wrist": rng.integers(0, 256, (size, 224, 224, 3), dtype=np.uint8),
        "proprio": rng.normal(size=(size, 8)).astype(np.float32),
        "object_state": rng.normal(size=(size, object_dim)).astype(np.float32),
        "instruction": [f"pick up object {i}" for i in range(size)],
    }


@pytest.fixture(scope="module")
def tiny():
    return TinyVLABackbone()


# ---------------------------------------------------------------------------------- preprocessing
def test_openvla_prompt_is_exact_and_lowercased():
    assert (
        openvla_prompt("Pick up the Ketchup")
        == "In: What action should the robot take to pick up the ketchup?\nOut:"
    )


def test_rotate_180_on_fixed_image():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    rotated = rotate_180(image)
    np.testing.assert_array_equal(rotated, image[::-1, ::-1])
    np.testing.assert_array_equal(rotated[0, 0], image[1, 2])
    assert rotated.flags["C_CONTIGUOUS"]


def test_policy_image_rotates_and_resizes():
    image = np.zeros((32, 32, 3), np.uint8)
    image[:16] = (255, 0, 0)  # top red
    image[16:] = (0, 0, 255)  # bottom blue
    out = policy_image(image)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    top, bottom = out[:100].reshape(-1, 3).mean(0), out[124:].reshape(-1, 3).mean(0)
    assert top[2] > 200 and top[0] < 50  # blue is on top after 180 degrees
    assert bottom[0] > 200 and bottom[2] < 50
    np.testing.assert_array_equal(model_image(out), out)  # the backbone does not rotate again


def test_center_crop_keeps_central_90_percent_of_area():
    image = np.full((224, 224, 3), 255, np.uint8)
    image[:4], image[-4:], image[:, :4], image[:, -4:] = 0, 0, 0, 0  # a 4-pixel black frame
    cropped = center_crop(image)
    assert cropped.shape == (224, 224, 3)
    assert cropped.min() == 255  # the crop starts sqrt(0.9)-margin ~5.8 px in: the frame is gone
    assert model_image(image, crop=False).min() == 0


# ---------------------------------------------------------------------------------- state
def test_state_backbone_is_lossless_and_pads_object_state():
    backbone = StateBackbone(hidden_dim=512, object_state_dim=128, instruction_dim=64)
    batch = batch_of(4)
    hidden = backbone.encode(batch)
    assert hidden.shape == (4, 512) and hidden.dtype == torch.float32
    features = backbone.state_features(batch)
    assert features.shape == (4, 8 + 128 + 64)
    torch.testing.assert_close(
        hidden @ backbone.projection, features, atol=1e-5, rtol=1e-5
    )  # isometry: invertible
    torch.testing.assert_close(features[:, :8], torch.as_tensor(batch["proprio"]))
    assert torch.all(features[:, 8 + 10 : 8 + 128] == 0)
    torch.testing.assert_close(
        features[1, -64:], torch.from_numpy(instruction_embedding("pick up object 1", 64))
    )
    assert not torch.allclose(features[0, -64:], features[1, -64:])
    assert backbone.required_obs == ("proprio", "object_state")
    assert StateBackbone(object_state_dim=0).required_obs == ("proprio",)


def test_state_backbone_errors_name_field_and_fix():
    with pytest.raises(
        ValueError,
        match=r"`object_state` has 130 dims but object_state_dim=128; set backbone.object_state_dim>=130",
    ):
        StateBackbone().encode(batch_of(2, object_dim=130))
    with pytest.raises(ValueError, match=r"hidden_dim=100 is smaller than the state width 200"):
        StateBackbone(hidden_dim=100)


def test_state_backbone_is_identical_in_another_process(tmp_path):
    batch = batch_of(3)
    here = StateBackbone().encode(batch).numpy()
    code = (
        "import numpy as np, sys; from rsdvla.backbones.state import StateBackbone; "
        "b = np.load(sys.argv[1], allow_pickle=True).item(); b['instruction'] = list(b['instruction']); "
        "np.save(sys.argv[2], StateBackbone().encode(b).numpy())"
    )
    np.save(tmp_path / "batch.npy", batch, allow_pickle=True)
    env = dict(os.environ, PYTHONHASHSEED="123")  # a different str-hash seed must not matter
    subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "batch.npy"), str(tmp_path / "out.npy")],
        check=True,
        env=env,
    )
    np.testing.assert_array_equal(here, np.load(tmp_path / "out.npy"))


# ---------------------------------------------------------------------------------- tiny VLM
def test_tiny_backbone_shapes_determinism_and_batch_independence(tiny):
    batch = batch_of(3)
    hidden = tiny.encode(batch)
    assert hidden.shape == (3, 64) and torch.isfinite(hidden).all()
    torch.testing.assert_close(
        TinyVLABackbone().encode(batch), hidden, rtol=0, atol=0
    )  # same seed, same weights
    assert not torch.allclose(TinyVLABackbone(seed=1).encode(batch), hidden)
    single = tiny.encode(
        {k: v[1:2] for k, v in batch.items()}
    )  # right padding does not leak into row 1
    torch.testing.assert_close(single, hidden[1:2], rtol=1e-5, atol=1e-5)
    assert tiny.required_obs == ("primary", "wrist")


def test_tiny_backbone_reads_instruction_and_both_cameras(tiny):
    batch = batch_of(2)
    base = tiny.encode(batch)
    other_text = dict(batch, instruction=["open the drawer", batch["instruction"][1]])
    assert not torch.allclose(tiny.encode(other_text)[0], base[0])
    torch.testing.assert_close(tiny.encode(other_text)[1], base[1], rtol=1e-5, atol=1e-5)
    other_wrist = dict(batch, wrist=batch["wrist"][::-1].copy())
    assert not torch.allclose(tiny.encode(other_wrist), base)


def test_tiny_backbone_token_layout_matches_openvla(tiny):
    input_ids, mask = tiny.tokenize(["Pick up", "a much longer instruction here"])
    assert (input_ids[:, 0] == tiny.processor.tokenizer.bos_token_id).all()
    prompt = tiny.processor.tokenizer.decode(input_ids[0, mask[0].bool()], skip_special_tokens=True)
    assert prompt == openvla_prompt("Pick up")
    pixel_values = tiny.pixel_values(batch_of(2))
    assert pixel_values.shape == (2, 6, 224, 224)  # primary and wrist stacked on channels


def test_pool_prompt_hidden_picks_last_text_token_after_patches():
    hidden = torch.arange(2 * 7 * 1, dtype=torch.float32).reshape(
        2, 7, 1
    )  # P=3 patches + T=4 text positions
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    torch.testing.assert_close(
        pool_prompt_hidden(hidden, mask, "last"), torch.tensor([[6.0], [11.0]])
    )
    # mean: row 1 attends BOS (7), patches (8, 9, 10) and one text token (11)
    torch.testing.assert_close(pool_prompt_hidden(hidden, mask, "mean")[1], torch.tensor([9.0]))


def test_tiny_mean_pooling_differs_from_last():
    batch = batch_of(2)
    mean = TinyVLABackbone(pooling="mean").encode(batch)
    assert mean.shape == (2, 64) and not torch.allclose(mean, TinyVLABackbone().encode(batch))
    with pytest.raises(ValueError, match="backbone.pooling"):
        TinyVLABackbone(pooling="max")


# ---------------------------------------------------------------------------------- openvla_oft
def test_openvla_oft_refuses_cpu_before_loading(monkeypatch):
    import transformers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def must_not_load(*args, **kwargs):
        raise AssertionError("transformers loading was reached")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", must_not_load)
    with pytest.raises(RuntimeError) as err:
        OpenVLAOFTBackbone()
    message = str(err.value)
    assert (
        "\n" not in message
        and "GPU" in message
        and "backbone=tiny" in message
        and "backbone=state" in message
    )


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("name", ["state", "tiny", "openvla_oft"])
def test_backbone_configs_compose_and_instantiate(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="extract", overrides=[f"backbone={name}"])
    if name == "openvla_oft" and not torch.cuda.is_available():
        with pytest.raises(
            Exception, match="needs a CUDA GPU"
        ):  # hydra wraps the one-line RuntimeError
            instantiate(cfg.backbone)
        return
    backbone = instantiate(cfg.backbone)
    assert backbone.hidden_dim == cfg.backbone.hidden_dim
    assert backbone.encode(batch_of(2)).shape == (2, cfg.backbone.hidden_dim)
