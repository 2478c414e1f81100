"""The observation pipeline: a raw LIBERO camera frame -> the model's image, in one place.

Every image a backbone sees went through :func:`policy_image` exactly once, whether the frame
came from the simulator (``rsdvla.envs.libero.LiberoEnv``, rollouts) or from a demo HDF5
(``rsdvla.data.libero_demos.LiberoDemoSet``, extraction). Backbones then apply only what is
model-specific (:func:`model_image`: OpenVLA-OFT's center crop; then their processor).

What OpenVLA-OFT does (moojink/openvla-oft, ``experiments/robot/``):

1. ``libero/libero_utils.py`` ``get_libero_image`` / ``get_libero_wrist_image``: rotate the raw
   256 x 256 render 180 degrees, ``img[::-1, ::-1]`` (robosuite renders upside down; the demo
   HDF5 files store frames as rendered, and the RLDS conversion used for training rotates them).
2. ``openvla_utils.py`` ``resize_image_for_policy``: JPEG encode/decode, then
   ``tf.image.resize(..., "lanczos3", antialias=True)`` to 224 x 224, rounded, clipped to uint8.
3. ``openvla_utils.py`` ``prepare_images_for_vla`` -> ``center_crop_image`` (``center_crop=True``
   for the LIBERO checkpoints): crop the central 90% of the *area* (side ``sqrt(0.9)``) and
   resize back to 224 x 224 (bilinear).
4. Prompt: ``In: What action should the robot take to {task_label.lower()}?\\nOut:``.

Steps 1-2 are :func:`policy_image`, step 3 is :func:`model_image`. We reproduce them with PIL
(JPEG quality 95 as ``tf.image.encode_jpeg``'s default, Lanczos resampling, bilinear crop-resize).
PIL and TensorFlow kernels differ slightly, so pixels are close to, not bit-identical with,
OpenVLA-OFT's TensorFlow pipeline.

Camera names: one name per camera in every in-memory observation and batch (env wrapper, demo
reader, policy, backbones): ``primary`` (third-person ``agentview``) and ``wrist``
(``robot0_eye_in_hand``). :data:`CAMERAS` maps them to the simulator's observation keys and the
demo HDF5 dataset names, which stay LIBERO's.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

OPENVLA_IMAGE_SIZE = 224
CENTER_CROP_AREA = 0.9
JPEG_QUALITY = 95


@dataclass(frozen=True)
class Camera:
    """Where one camera's raw frames live: the robosuite observation key and the demo HDF5 dataset
    (``data/demo_<i>/obs/<demo_key>``)."""

    sim_key: str
    demo_key: str


CAMERAS: dict[str, Camera] = {
    "primary": Camera(sim_key="agentview_image", demo_key="agentview_rgb"),
    "wrist": Camera(sim_key="robot0_eye_in_hand_image", demo_key="eye_in_hand_rgb"),
}
"""Our camera name -> its raw sources (the only place these names are mapped)."""


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


def _check_frame(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"{what}: expected one [h, w, 3] uint8 camera frame, got shape {image.shape} "
            f"dtype {image.dtype}"
        )
    return image


def policy_image(
    raw_frame: np.ndarray, size: int = OPENVLA_IMAGE_SIZE, jpeg: bool = True
) -> np.ndarray:
    """A raw LIBERO camera frame (as rendered, upside down) -> the policy's image.

    ``[h, w, 3]`` uint8 -> ``[size, size, 3]`` uint8: rotate 180 degrees once, JPEG round trip
    (``jpeg``), Lanczos resize to ``size`` (skipped when the frame already has that size).
    OpenVLA-OFT's ``get_libero_image`` + ``resize_image_for_policy``.
    """
    image = rotate_180(_check_frame(raw_frame, "policy_image"))
    if jpeg:
        image = jpeg_roundtrip(image)
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), resample=Image.LANCZOS))


def policy_images(
    raw_frames: np.ndarray, size: int = OPENVLA_IMAGE_SIZE, jpeg: bool = True
) -> np.ndarray:
    """``[T, h, w, 3]`` uint8 raw frames -> ``[T, size, size, 3]`` uint8 (:func:`policy_image` each)."""
    frames = np.asarray(raw_frames)
    if frames.ndim != 4:
        raise ValueError(
            f"policy_images: expected [T, h, w, 3] uint8 frames, got shape {frames.shape}"
        )
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for t, frame in enumerate(frames):
        out[t] = policy_image(frame, size, jpeg)
    return out


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


def model_image(
    image: np.ndarray, size: int = OPENVLA_IMAGE_SIZE, crop: bool = False
) -> np.ndarray:
    """A policy image -> what an OpenVLA-style backbone feeds its processor (model-specific part).

    ``[size, size, 3]`` uint8 -> ``[size, size, 3]`` uint8, center-cropped when ``crop``. A frame
    of another size was not prepared by :func:`policy_image`: one-line error instead of a silent
    resize (which would also skip the rotation).
    """
    image = _check_frame(image, "backbone image")
    if image.shape[:2] != (size, size):
        raise ValueError(
            f"backbone image: expected a [{size}, {size}, 3] policy image, got {list(image.shape)}; "
            "pass raw camera frames through rsdvla.backbones.preprocessing.policy_image first "
            f"(LiberoEnv and LiberoDemoSet do, at image_size={OPENVLA_IMAGE_SIZE}: keep "
            f"backbone.image_size={OPENVLA_IMAGE_SIZE})"
        )
    return center_crop(image, CENTER_CROP_AREA, size) if crop else image
