"""The three TensorFlow image ops OpenVLA-OFT's pixels go through, in numpy, pixel for pixel.

OpenVLA-OFT's training data (its RLDS builder) and its evaluation (``resize_image_for_policy``,
``center_crop_image``) prepare images with TensorFlow. Its checkpoints saw exactly those pixels,
so we reproduce them without TensorFlow at run time:

- :func:`jpeg_roundtrip`: ``tf.image.encode_jpeg`` (quality 95, 4:2:0 chroma, libjpeg's accurate
  integer forward DCT, standard tables) then ``tf.io.decode_image`` (``dct_method=""``, which is
  libjpeg's fast integer inverse DCT, and fancy chroma upsampling). PIL's encoder writes the same
  entropy-coded data as TensorFlow's (only the JFIF density header differs); PIL's decoder always
  uses the accurate inverse DCT, so decoding goes through libjpeg-turbo's TurboJPEG API
  (``simplejpeg``, ``fastdct=True``, ``fastupsample=False``).
- :func:`resize_lanczos3`: ``tf.image.resize(method="lanczos3", antialias=True)``, TensorFlow's
  scale-and-translate kernel: separable, rows first into a float32 buffer, then columns.
- :func:`crop_and_resize`: ``tf.image.crop_and_resize`` (bilinear) on a float32 image.

Each op follows TensorFlow's float32 arithmetic step by step (the order of products and sums),
so results equal TensorFlow's exactly; ``tests/test_tf_image.py`` checks this against fixtures
written by TensorFlow itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io

import numpy as np
from PIL import Image

F32 = np.float32
LANCZOS3_RADIUS = F32(3.0)
KERNEL_PI = F32(3.14159265359)  # the value of pi TensorFlow's Lanczos kernel uses, as float32
UINT8_TO_FLOAT = F32(1.0 / 255)  # tf.image.convert_image_dtype(uint8 -> float32)
FLOAT_TO_UINT8 = F32(255.5)  # convert_image_dtype(float32 -> uint8): x * 255.5, then truncate


# ------------------------------------------------------------------------------------- JPEG
def jpeg_roundtrip(image: np.ndarray, quality: int = 95) -> np.ndarray:
    """``[h, w, 3]`` uint8 -> ``[h, w, 3]`` uint8, as ``tf.io.decode_image(tf.image.encode_jpeg(x))``."""
    import simplejpeg  # libjpeg-turbo's TurboJPEG, for the fast inverse DCT PIL does not expose

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=quality)
    return simplejpeg.decode_jpeg(
        buffer.getvalue(), colorspace="RGB", fastdct=True, fastupsample=False
    )


# ---------------------------------------------------------------------------- Lanczos resize
@functools.cache
def _libm_sinf():
    """The C library's single-precision ``sinf`` (TensorFlow's ``std::sin(float)``), or None."""
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    sinf = ctypes.CDLL(name).sinf
    sinf.restype, sinf.argtypes = ctypes.c_float, [ctypes.c_float]
    return sinf


def _sinf(values: np.ndarray) -> np.ndarray:
    """float32 sine as the C library computes it. glibc's ``sinf`` is not always correctly rounded
    (on 256 -> 224 it differs from the rounded double-precision sine in 51 of ~2000 arguments), and
    the weights keep that last bit, so we call it; without a C math library, the rounded
    double-precision sine (weights may then differ in their last bit)."""
    sinf = _libm_sinf()
    if sinf is None:
        return np.sin(values.astype(np.float64)).astype(F32)
    flat = [sinf(float(v)) for v in values.ravel()]
    return np.asarray(flat, dtype=F32).reshape(values.shape)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    """TensorFlow's ``LanczosKernelFunc(3)`` on float32 ``x`` >= 0, in float32."""
    x = x.astype(F32)
    pix = KERNEL_PI * x
    sin_a = _sinf(pix)
    sin_b = _sinf((pix / LANCZOS3_RADIUS).astype(F32))
    with np.errstate(divide="ignore", invalid="ignore"):
        value = LANCZOS3_RADIUS * sin_a * sin_b / (KERNEL_PI * KERNEL_PI * x * x)
    value = np.where(x <= F32(1e-3), F32(1.0), value)
    return np.where(x > LANCZOS3_RADIUS, F32(0.0), value).astype(F32)


@functools.lru_cache(maxsize=16)
def lanczos3_spans(input_size: int, output_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each output sample reads and with which weights, as TensorFlow's ``ComputeSpans``.

    Returns ``starts [output_size]`` int and ``weights [output_size, span]`` float32 (normalised to
    sum 1, zero past each sample's span). Sample ``i`` sits at ``(i + 0.5) / scale`` in input
    pixel units; with antialiasing the kernel is stretched by ``1 / scale`` when shrinking.
    """
    scale = F32(output_size) / F32(input_size)
    inv_scale = F32(1.0 / float(scale))
    kernel_scale = max(inv_scale, F32(1.0))
    radius = LANCZOS3_RADIUS * kernel_scale
    span = min(2 * int(np.ceil(radius)) + 1, input_size)
    one_over_kernel_scale = F32(1.0) / kernel_scale
    sample = (np.arange(output_size, dtype=F32) + F32(0.5)) * inv_scale
    starts = np.clip(np.ceil(sample - radius - F32(0.5)), 0, input_size - 1).astype(np.int64)
    ends = np.clip(np.floor(sample + radius - F32(0.5)), 0, input_size - 1).astype(np.int64) + 1
    source = starts[:, None] + np.arange(span)[None, :]
    inside = source < ends[:, None]
    position = (source.astype(F32) + F32(0.5)) - sample[:, None]
    weights = np.where(inside, _lanczos3(np.abs(position * one_over_kernel_scale)), F32(0.0))
    total = np.zeros(output_size, F32)
    for k in range(span):  # float32 running sum in source order, as TensorFlow's loop
        total += weights[:, k]
    # (samples never fall outside the input here: no translation, so TF's empty spans do not occur)
    weights = (weights * (F32(1.0) / total)[:, None]).astype(F32)
    starts.flags.writeable = weights.flags.writeable = False  # cached: shared by every call
    return starts, weights


def _gather(values: np.ndarray, starts: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """Weighted sums along ``axis`` of float32 ``values``: one float32 multiply-add per span tap."""
    size = values.shape[axis]
    moved = np.ascontiguousarray(np.moveaxis(values, axis, 0))
    out = np.zeros((len(starts),) + moved.shape[1:], F32)
    expand = (slice(None),) + (None,) * (moved.ndim - 1)
    for k in range(weights.shape[1]):
        index = np.minimum(starts + k, size - 1)  # past the edge the weight is 0: adds +0.0
        weight = np.where(starts + k < size, weights[:, k], F32(0.0))
        out += moved[index] * weight[expand]
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def resize_lanczos3(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``[h, w, c]`` -> ``[height, width, c]`` float32, as ``tf.image.resize(x, (height, width),
    method="lanczos3", antialias=True)`` (same size: returned as float32 unchanged, as TF does)."""
    values = np.asarray(image).astype(F32)
    in_h, in_w = values.shape[:2]
    if (in_h, in_w) == (height, width):
        return values
    rows = _gather(values, *lanczos3_spans(in_h, height), axis=0)
    return _gather(rows, *lanczos3_spans(in_w, width), axis=1)


def round_to_uint8(values: np.ndarray) -> np.ndarray:
    """``tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)``: round half to even, clip."""
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- crop and resize
def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 -> float32 in [0, 1], as ``tf.image.convert_image_dtype(x, tf.float32)``."""
    return np.asarray(image).astype(F32) * UINT8_TO_FLOAT


def to_uint8(values: np.ndarray) -> np.ndarray:
    """float32 -> uint8 as OFT's ``clip_by_value(x, 0, 1)`` then ``convert_image_dtype(x, uint8,
    saturate=True)``: times 255.5, clamped, truncated."""
    scaled = np.clip(values.astype(F32), F32(0.0), F32(1.0)) * FLOAT_TO_UINT8
    return np.clip(scaled, F32(0.0), F32(255.0)).astype(np.uint8)


def center_box(area: float) -> tuple[np.float32, np.float32, np.float32, np.float32]:
    """OFT's normalised ``(y1, x1, y2, x2)`` box of the central ``area`` fraction, in float32."""
    side = np.clip(np.sqrt(F32(area)), F32(0.0), F32(1.0))
    offset = (F32(1.0) - side) / F32(2.0)
    return offset, offset, offset + side, offset + side


def _crop_axis(start: np.float32, end: np.float32, in_size: int, out_size: int):
    """Bilinear sampling positions along one axis: ``(low index, high index, lerp)``."""
    if out_size > 1:
        step = (end - start) * F32(in_size - 1) / F32(out_size - 1)
        pos = start * F32(in_size - 1) + np.arange(out_size, dtype=F32) * step
    else:
        pos = np.full(1, F32(0.5) * (start + end) * F32(in_size - 1), F32)
    pos = pos.astype(F32)
    if (pos < 0).any() or (pos > in_size - 1).any():
        raise ValueError("crop_and_resize: the box reaches outside the image (not supported)")
    low = np.floor(pos).astype(np.int64)
    high = np.ceil(pos).astype(np.int64)
    return low, high, (pos - low.astype(F32)).astype(F32)


def crop_and_resize(
    image: np.ndarray, box: tuple[float, float, float, float], height: int, width: int
) -> np.ndarray:
    """``[h, w, c]`` float32 -> ``[height, width, c]`` float32, as ``tf.image.crop_and_resize`` of
    one normalised box ``(y1, x1, y2, x2)`` inside the image (bilinear)."""
    values = np.asarray(image, dtype=F32)
    in_h, in_w = values.shape[:2]
    y1, x1, y2, x2 = (F32(v) for v in box)
    top, bottom, y_lerp = _crop_axis(y1, y2, in_h, height)
    left, right, x_lerp = _crop_axis(x1, x2, in_w, width)
    x_lerp = x_lerp[None, :, None]
    upper_row, lower_row = values.take(top, axis=0), values.take(bottom, axis=0)
    upper_left, lower_left = upper_row.take(left, axis=1), lower_row.take(left, axis=1)
    upper = upper_left + (upper_row.take(right, axis=1) - upper_left) * x_lerp
    lower = lower_left + (lower_row.take(right, axis=1) - lower_left) * x_lerp
    return (upper + (lower - upper) * y_lerp[:, None, None]).astype(F32)
