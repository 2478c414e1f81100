"""Our TensorFlow image ops (``backbones/tf_image``) against TensorFlow's own output.

``tests/data/make_tf_image_fixtures.py`` (needs tensorflow-cpu; command in its docstring) ran
OpenVLA-OFT's published preprocessing on raw LIBERO renders (agent and wrist cameras) and on
synthetic edge images, and stored the inputs (``tests/data/tf_image/*.png``) and SHA-256 digests
of TensorFlow's output at each stage. Equal digests mean equal pixels (and equal float32 bits).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rsdvla.backbones import tf_image
from rsdvla.backbones.preprocessing import model_image, policy_image, rotate_180

FIXTURES = Path(__file__).resolve().parent / "data" / "tf_image"
RECORD = json.loads((FIXTURES / "digests.json").read_text())
FRAMES = sorted(RECORD["frames"])
LIBERO = [name for name in FRAMES if name.startswith("libero")]
SIZE = 224


def digest(array: np.ndarray) -> str:
    """As the fixture script: SHA-256 of dtype, shape and bytes."""
    array = np.ascontiguousarray(array)
    return hashlib.sha256(
        f"{array.dtype.str}{list(array.shape)}".encode() + array.tobytes()
    ).hexdigest()


def raw(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / f"{name}.png").convert("RGB"))


def test_fixtures_cover_libero_cameras_and_edge_images():
    assert {n.rsplit("_", 1)[1] for n in LIBERO} == {"agent", "wrist"} and len(LIBERO) >= 4
    assert {"flat_black", "flat_white", "saturated", "checker_1px", "random_odd_37x53"} <= set(
        FRAMES
    )
    assert raw(LIBERO[0]).shape == (256, 256, 3)


@pytest.mark.parametrize("name", FRAMES)
def test_each_stage_equals_tensorflow(name):
    frame, want = raw(name), RECORD["frames"][name]
    rotated = rotate_180(frame)
    assert digest(tf_image.jpeg_roundtrip(rotated)) == want["jpeg"], "JPEG round trip"
    assert digest(tf_image.resize_lanczos3(rotated, SIZE, SIZE)) == want["resize_float"], (
        "Lanczos3 resize (float32)"
    )
    policy = policy_image(frame, SIZE)
    assert digest(policy) == want["policy"], "policy image"
    crop = tf_image.crop_and_resize(tf_image.to_float(policy), tf_image.center_box(0.9), SIZE, SIZE)
    assert digest(crop) == want["crop_float"], "crop_and_resize (float32)"
    assert digest(model_image(policy, SIZE, crop=True)) == want["model"], "model image"


@pytest.mark.parametrize("name", LIBERO)
def test_pil_pipeline_differs_from_tensorflow(name):
    """The digests are not trivially matched: PIL's accurate-DCT JPEG decode gives other pixels."""
    buffer = io.BytesIO()
    Image.fromarray(rotate_180(raw(name))).save(buffer, format="JPEG", quality=95)
    pil = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    assert digest(pil) != RECORD["frames"][name]["jpeg"]
    assert digest(tf_image.jpeg_roundtrip(rotate_180(raw(name)))) == RECORD["frames"][name]["jpeg"]


def test_lanczos_spans_are_normalised_and_local():
    starts, weights = tf_image.lanczos3_spans(256, 224)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-6)
    assert weights.shape == (224, 2 * 4 + 1)  # radius 3 stretched by 256/224 -> 4 taps each side
    centres = (np.arange(224) + 0.5) * 256 / 224 - 0.5  # where each output sample sits
    taps = starts[:, None] + np.arange(weights.shape[1])
    centroid = (weights * taps).sum(1)
    interior = slice(
        4, -4
    )  # away from the clamped edges: centred on the sample (a half-pixel shift fails)
    np.testing.assert_allclose(centroid[interior], centres[interior], atol=0.05)


def test_crop_box_outside_the_image_is_refused():
    with pytest.raises(ValueError, match="outside the image"):
        tf_image.crop_and_resize(np.zeros((8, 8, 3), np.float32), (-0.1, 0, 1, 1), 4, 4)
