"""Video files: MP4 (H.264 through imageio-ffmpeg, whose wheel ships an ffmpeg binary), else animated WebP or
GIF through Pillow.

The container follows the file's suffix. MP4 streams frames to ffmpeg one at a time; Pillow needs every frame
in memory before it writes, which is why MP4 is the default whenever ffmpeg is available.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from nada_sweep.errors import UserError
from nada_sweep.run_files import atomic_write, output_file_problem

SUFFIXES = (".mp4", ".webp", ".gif")
MP4_QUALITY = 8  # imageio-ffmpeg's 0-10 scale; 8 keeps fine texture without large files


def ffmpeg_missing() -> str | None:
    """Why MP4 cannot be written here, or None when it can."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return "the imageio-ffmpeg package is not installed (pip install 'nada-sweep[media]')"
    try:
        imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        return f"imageio-ffmpeg finds no ffmpeg binary ({error})"
    return None


def default_suffix() -> str:
    return ".webp" if ffmpeg_missing() else ".mp4"


def check_output(path: Path, overwrite: bool) -> None:
    """Refuse an unknown suffix, an MP4 without ffmpeg, or an existing file (unless overwrite)."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(f"--out: {path}: unknown video type {suffix or '(none)'!r}; use {', '.join(SUFFIXES)}")
    if suffix == ".mp4":
        missing = ffmpeg_missing()
        if missing:
            raise UserError(f"--out: {path}: MP4 needs ffmpeg, but {missing}; or write {path.with_suffix('.webp')}")
    problem = output_file_problem(path)
    if problem:
        raise UserError(f"--out: {problem}")
    if path.exists() and not overwrite:
        raise UserError(f"--out: {path} already exists; pass --overwrite to replace it")


def _even(frame: np.ndarray) -> np.ndarray:
    # H.264 in yuv420p needs even sides; pad by repeating the last row/column rather than rescaling.
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_video(
    path: Path,
    frames: Iterable[np.ndarray],
    fps: int,
    on_frame: Callable[[], None] | None = None,
) -> int:
    """Write HxWx3 uint8 frames to `path` (atomically: a killed run leaves no half file); returns the count."""
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return _write_mp4(path, frames, fps, on_frame)
    images = []
    for frame in frames:
        images.append(Image.fromarray(frame))
        if on_frame:
            on_frame()
    if not images:
        raise ValueError("no frames")
    duration = round(1000 / fps)
    kind = {".webp": "WEBP", ".gif": "GIF"}[suffix]
    options = {"quality": 90} if kind == "WEBP" else {"optimize": False}
    atomic_write(path, lambda tmp: images[0].save(tmp, format=kind, save_all=True, append_images=images[1:],
                                                  duration=duration, loop=0, **options))
    return len(images)


def _write_mp4(path: Path, frames: Iterable[np.ndarray], fps: int, on_frame: Callable[[], None] | None) -> int:
    import imageio_ffmpeg

    count = 0

    def encode(tmp: Path) -> None:
        nonlocal count
        writer = None
        try:
            for frame in frames:
                frame = _even(frame)
                if writer is None:
                    height, width = frame.shape[:2]
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (width, height), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                        quality=MP4_QUALITY, macro_block_size=2, output_params=["-f", "mp4"])
                    writer.send(None)  # start ffmpeg
                writer.send(np.ascontiguousarray(frame))
                count += 1
                if on_frame:
                    on_frame()
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise ValueError("no frames")

    atomic_write(path, encode)
    return count
