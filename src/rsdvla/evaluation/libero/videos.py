"""Episode videos with imageio: MP4 when imageio-ffmpeg is installed, GIF otherwise."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path

import numpy as np


def video_path(
    folder: str | os.PathLike, suite: str, task_id: int, trial: int, success: bool
) -> Path:
    """``<folder>/<suite>_task<t>_trial<k>_<success|failure>.<mp4|gif>``."""
    ext = "mp4" if find_spec("imageio_ffmpeg") is not None else "gif"
    outcome = "success" if success else "failure"
    return Path(folder) / f"{suite}_task{task_id}_trial{trial}_{outcome}.{ext}"


def write_video(
    path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 20
) -> Path | None:
    """Frames ``[h, w, 3]`` uint8 -> a video file (written to a temp name, then renamed). None if no frames."""
    if not frames:
        return None
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    if path.suffix == ".gif":
        imageio.mimsave(tmp, list(frames), format="GIF", duration=1000 / fps, loop=0)
    else:
        imageio.mimsave(tmp, list(frames), format="FFMPEG", fps=fps)
    os.replace(tmp, path)
    return path
