"""Write the TensorFlow reference for ``tests/test_tf_image.py``, and print ours-vs-TF and PIL-vs-TF figures.

OpenVLA-OFT prepares images with TensorFlow (``../shared/oft/tf_image_ops.py``: its functions as
published). This script runs those functions on raw frames rendered from a real LIBERO env
(agent and wrist cameras of two tasks) and on synthetic edge images (flat, saturated, a one-pixel
checkerboard, random noise, odd sizes), and writes

- ``tf_image/<frame>.png``: the raw frames (inputs; PNG is lossless and ~280 KB for all);
- ``tf_image/digests.json``: for each frame, SHA-256 digests of TensorFlow's output at each stage
  (JPEG round trip, Lanczos resize alone as float32, policy image, center crop as float32, model
  image), and the TensorFlow version.

Digests keep the fixtures small (the test needs equality, which a digest decides). The script also
prints the table in docs/evaluation.md ("Pixels against TensorFlow"): max and mean absolute
difference and the share of identical values, for this project's ops and for PIL's.

Needs tensorflow-cpu (a test-only venv on top of the system packages) and the ``sim`` extra:

    python -m venv --system-site-packages /tmp/tf-venv && /tmp/tf-venv/bin/pip install tensorflow-cpu
    MUJOCO_GL=egl PYOPENGL_PLATFORM=egl PYTHONPATH=src /tmp/tf-venv/bin/python \\
        tests/data/make_tf_image_fixtures.py --oft ../shared/oft
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
TASKS = (("libero_object", 0), ("libero_spatial", 0))
SIZE = 224
FOLDER = "tf_image"


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (the test computes the same)."""
    array = np.ascontiguousarray(array)
    head = f"{array.dtype.str}{list(array.shape)}".encode()
    return hashlib.sha256(head + array.tobytes()).hexdigest()


def synthetic_frames() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    checker = (np.indices((256, 256)).sum(0) % 2 * 255).astype(np.uint8)
    saturated = np.zeros((256, 256, 3), np.uint8)
    saturated[:128, :, 0] = 255
    saturated[128:, :128, 1] = 255
    saturated[128:, 128:] = 255
    ramp = np.linspace(0, 255, 256).astype(np.uint8)
    return {
        "flat_black": np.zeros((256, 256, 3), np.uint8),
        "flat_white": np.full((256, 256, 3), 255, np.uint8),
        "flat_grey": np.full((256, 256, 3), 127, np.uint8),
        "saturated": saturated,
        "checker_1px": np.repeat(checker[..., None], 3, axis=-1),
        "ramp": np.stack(
            [
                np.tile(ramp, (256, 1)),
                np.tile(ramp[:, None], (1, 256)),
                255 - np.tile(ramp, (256, 1)),
            ],
            -1,
        ),
        "random_64": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "random_odd_37x53": rng.integers(0, 256, (37, 53, 3), dtype=np.uint8),
    }


def libero_frames() -> dict[str, np.ndarray]:
    from rsdvla.envs.libero import LiberoEnv

    frames = {}
    for suite, task_id in TASKS:
        with LiberoEnv(suite, task_id) as env:
            obs = env.reset(0)
            frames[f"{suite}_{task_id}_agent"] = obs["agentview_image"]
            frames[f"{suite}_{task_id}_wrist"] = obs["robot0_eye_in_hand_image"]
    return frames


def tf_stages(tf, oft, raw: np.ndarray) -> dict[str, np.ndarray]:
    """TensorFlow's output at each stage, run through OFT's published functions where they exist."""
    rotated = oft.get_libero_image({"agentview_image": raw})
    jpeg = tf.io.decode_image(
        tf.image.encode_jpeg(rotated), expand_animations=False, dtype=tf.uint8
    )
    resized = tf.image.resize(rotated, (SIZE, SIZE), method="lanczos3", antialias=True)
    policy = oft.resize_image_for_policy(rotated, SIZE)
    floats = tf.image.convert_image_dtype(tf.convert_to_tensor(policy), tf.float32)
    crop = oft.crop_and_resize(floats, 0.9, 1)
    model = np.asarray(oft.center_crop_image(policy))
    return {
        "jpeg": jpeg.numpy(),
        "resize_float": resized.numpy(),
        "policy": policy,
        "crop_float": crop.numpy(),
        "model": model,
    }


def our_stages(raw: np.ndarray) -> dict[str, np.ndarray]:
    from rsdvla.backbones import tf_image
    from rsdvla.backbones.preprocessing import model_image, policy_image, rotate_180

    rotated = rotate_180(raw)
    policy = policy_image(raw, SIZE)
    return {
        "jpeg": tf_image.jpeg_roundtrip(rotated),
        "resize_float": tf_image.resize_lanczos3(rotated, SIZE, SIZE),
        "policy": policy,
        "crop_float": tf_image.crop_and_resize(
            tf_image.to_float(policy), tf_image.center_box(0.9), SIZE, SIZE
        ),
        "model": model_image(policy, SIZE, crop=True),
    }


def pil_stages(raw: np.ndarray) -> dict[str, np.ndarray]:
    """The PIL pipeline this project used before (JPEG 95, LANCZOS, bilinear box resize)."""
    rotated = np.ascontiguousarray(raw[::-1, ::-1])

    def jpeg(image):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=95)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    policy = _pil_lanczos(jpeg(rotated))
    return {"jpeg": jpeg(rotated), "policy": policy, "model": _pil_crop(policy)}


def figures(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(diff.max()), float(diff.mean()), float((diff == 0).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oft", type=Path, default=HERE.parents[2] / "shared" / "oft")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--render-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render_to:  # the child process: MuJoCo's EGL and TensorFlow crash in one process
        np.savez(args.render_to, **libero_frames())
        return
    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp) / "frames.npz"
        subprocess.run([sys.executable, __file__, "--render-to", str(rendered)], check=True)
        frames = {**np.load(rendered), **synthetic_frames()}
    sys.path.insert(0, str(args.oft))
    import tensorflow as tf
    import tf_image_ops as oft

    from rsdvla.backbones import tf_image
    from rsdvla.backbones.preprocessing import model_image

    record = {"tensorflow": tf.__version__, "frames": {}}
    rows: dict[str, list] = {}
    for name, raw in frames.items():
        theirs = tf_stages(tf, oft, raw)
        record["frames"][name] = {stage: digest(v) for stage, v in theirs.items()}
        if not name.startswith("libero"):
            continue
        ours, pil = our_stages(raw), pil_stages(raw)
        tf_jpeg, tf_policy = theirs["jpeg"], theirs["policy"]
        pairs = {  # stage: (PIL's output, ours, TensorFlow's), each pair from the same input
            "policy image (rotate, JPEG, resize)": (pil["policy"], ours["policy"], tf_policy),
            "JPEG round trip alone": (pil["jpeg"], ours["jpeg"], tf_jpeg),
            "Lanczos resize alone (TF's JPEG output in)": (
                _pil_lanczos(tf_jpeg),
                tf_image.round_to_uint8(tf_image.resize_lanczos3(tf_jpeg, SIZE, SIZE)),
                tf_policy,
            ),
            "center crop alone (TF's policy image in)": (
                _pil_crop(tf_policy),
                model_image(tf_policy, SIZE, crop=True),
                theirs["model"],
            ),
            "model image (all of it)": (pil["model"], ours["model"], theirs["model"]),
        }
        for stage, (p, o, t) in pairs.items():
            rows.setdefault(stage, []).append((p, o, t))
    folder = args.out / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, raw in frames.items():
        Image.fromarray(raw).save(folder / f"{name}.png", optimize=True)
    (folder / "digests.json").write_text(json.dumps(record, indent=1) + "\n")

    print(
        f"TensorFlow {tf.__version__}; {sum(n.startswith('libero') for n in frames)} LIBERO frames"
    )
    print("| stage | PIL vs TF: max / mean / identical | ours vs TF: max / mean / identical |")
    print("| --- | --- | --- |")
    for stage, triples in rows.items():
        pil_all = np.concatenate([p.ravel() for p, _, _ in triples])
        tf_all = np.concatenate([t.ravel() for _, _, t in triples])
        ours_all = np.concatenate([o.ravel() for _, o, _ in triples])
        p = figures(pil_all, tf_all)
        o = figures(ours_all, tf_all)
        print(
            f"| {stage} | {p[0]:.0f} / {p[1]:.3f} / {100 * p[2]:.1f}% | "
            f"{o[0]:.0f} / {o[1]:.3f} / {100 * o[2]:.1f}% |"
        )


def _pil_lanczos(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((SIZE, SIZE), resample=Image.LANCZOS))


def _pil_crop(policy: np.ndarray) -> np.ndarray:
    side = math.sqrt(0.9)
    h, w = policy.shape[:2]
    x0, y0 = w * (1 - side) / 2, h * (1 - side) / 2
    box = (x0, y0, x0 + w * side, y0 + h * side)
    return np.asarray(Image.fromarray(policy).resize((SIZE, SIZE), Image.BILINEAR, box=box))


if __name__ == "__main__":
    main()
