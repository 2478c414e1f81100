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

Steps 1-2 are :func:`policy_image`, step 3 is :func:`model_image`. TensorFlow is not needed: the
three TensorFlow ops are reimplemented in :mod:`rsdvla.backbones.tf_image` and give the same
pixels as TensorFlow's (``tests/test_tf_image.py`` compares them with fixtures TensorFlow wrote
from LIBERO renders and synthetic images; docs/evaluation.md has the figures).

Camera names: one name per camera in every in-memory observation and batch (env wrapper, demo
reader, policy, backbones): ``primary`` (third-person ``agentview``) and ``wrist``
(``robot0_eye_in_hand``). :data:`CAMERAS` maps them to the simulator's observation keys and the
demo HDF5 dataset names, which stay LIBERO's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rsdvla.backbones import tf_image

OPENVLA_IMAGE_SIZE = 224
CENTER_CROP_AREA = 0.9
JPEG_QUALITY = 95
PIXEL_PIPELINE = "tf"
"""Which image pipeline image backbones' ids record (``pixels=tf``: OpenVLA-OFT's TensorFlow steps,
equalled bit for bit by ``backbones.tf_image``); a store extracted with another is refused."""


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
    (``jpeg``; quality 95 as ``tf.image.encode_jpeg``'s default), Lanczos3 antialiased resize to
    ``size`` (none when the frame already has that size, as ``tf.image.resize``), rounded half to
    even and clipped. OpenVLA-OFT's ``get_libero_image`` + ``resize_image_for_policy``.
    """
    image = rotate_180(_check_frame(raw_frame, "policy_image"))
    if jpeg:
        image = tf_image.jpeg_roundtrip(image, JPEG_QUALITY)
    if image.shape[:2] == (size, size):
        return image
    return tf_image.round_to_uint8(tf_image.resize_lanczos3(image, size, size))


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

    ``[h, w, 3]`` uint8 -> ``[size, size, 3]`` uint8 (``size`` defaults to ``h``). OpenVLA-OFT's
    ``center_crop_image``: to float in [0, 1], ``tf.image.crop_and_resize`` of the central box,
    clipped, back to uint8 (times 255.5, truncated).
    """
    size = image.shape[0] if size is None else size
    values = tf_image.to_float(image)
    cropped = tf_image.crop_and_resize(values, tf_image.center_box(area), size, size)
    return tf_image.to_uint8(cropped)


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
