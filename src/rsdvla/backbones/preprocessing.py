"""OpenVLA-OFT's LIBERO input preprocessing as pure functions (numpy / PIL, no model).

What OpenVLA-OFT does (``experiments/robot/libero/libero_utils.py`` and
``experiments/robot/openvla_utils.py``):
1. ``get_libero_image``: rotate the rendered frame 180 degrees, ``img[::-1, ::-1]`` (LIBERO renders
   upside down; OpenVLA's no-noops HDF5 files store the frames as rendered, and the RLDS
   conversion used for training rotates them).
2. ``resize_image_for_policy``: JPEG encode/decode, then ``tf.image.resize(..., "lanczos3",
   antialias=True)`` to 224 x 224, rounded and clipped to uint8.
3. ``center_crop_image`` (``center_crop=True`` for the LIBERO checkpoints): crop the central
   90% of the *area* (side ``sqrt(0.9)``) and resize it back to 224 x 224 (bilinear).
4. Prompt: ``In: What action should the robot take to {task_label.lower()}?\\nOut:``.

We reproduce 2 and 3 with PIL (JPEG quality 95 as ``tf.image.encode_jpeg``'s default, Lanczos
resampling, bilinear crop-resize). PIL and TensorFlow kernels differ slightly, so pixels are
close to, not bit-identical with, OpenVLA's TensorFlow pipeline.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

OPENVLA_IMAGE_SIZE = 224
CENTER_CROP_AREA = 0.9
JPEG_QUALITY = 95


def openvla_prompt(instruction: str) -> str:
    """The OpenVLA prompt for one instruction (lower-cased, as OpenVLA-OFT's ``get_vla_action``)."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


def rotate_180(image: np.ndarray) -> np.ndarray:
    """``[h, w, 3]`` -> the same image rotated 180 degrees (``img[::-1, ::-1]``), contiguous."""
    return np.ascontiguousarray(np.asarray(image)[::-1, ::-1])


def jpeg_roundtrip(image: np.ndarray, quality: int = JPEG_QUALITY) -> np.ndarray:
    """Encode ``[h, w, 3]`` uint8 as JPEG and decode it again (as OpenVLA's RLDS builder does)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def resize_for_policy(
    image: np.ndarray, size: int = OPENVLA_IMAGE_SIZE, jpeg: bool = True
) -> np.ndarray:
    """``[h, w, 3]`` uint8 -> ``[size, size, 3]`` uint8 (optional JPEG round trip, then Lanczos)."""
    image = np.asarray(image, dtype=np.uint8)
    if jpeg:
        image = jpeg_roundtrip(image)
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), resample=Image.LANCZOS))


def center_crop(
    image: np.ndarray, area: float = CENTER_CROP_AREA, size: int | None = None
) -> np.ndarray:
    """Crop the central ``area`` fraction (side ``sqrt(area)``) and resize back to ``size`` (bilinear).

    ``[h, w, 3]`` uint8 -> ``[size, size, 3]`` uint8 (``size`` defaults to ``h``).
    """
    height, width = image.shape[:2]
    size = height if size is None else size
    side = math.sqrt(min(max(area, 0.0), 1.0))
    x0, y0 = width * (1 - side) / 2, height * (1 - side) / 2
    box = (x0, y0, x0 + width * side, y0 + height * side)
    return np.asarray(Image.fromarray(image).resize((size, size), resample=Image.BILINEAR, box=box))


def prepare_libero_image(
    image: np.ndarray,
    size: int = OPENVLA_IMAGE_SIZE,
    rotate: bool = True,
    jpeg: bool = True,
    crop: bool = False,
) -> np.ndarray:
    """One LIBERO frame as stored in the demo HDF5 -> what OpenVLA-OFT feeds its processor.

    ``[h, w, 3]`` uint8 -> ``[size, size, 3]`` uint8: rotate 180, resize, optional center crop.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image: expected [h, w, 3] uint8, got shape {image.shape} dtype {image.dtype}"
        )
    if rotate:
        image = rotate_180(image)
    image = resize_for_policy(image, size, jpeg=jpeg)
    if crop:
        image = center_crop(image, CENTER_CROP_AREA, size)
    return image
