"""Image grids written as PNG, labelled when they come from random-weight demo models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from nada_sweep.errors import shortened
from nada_sweep.run_files import atomic_write

PNG_LABEL_KEY = "nada-sweep"
# Style images a folder may hold (an image-guided target); every format here is one Pillow reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def image_files(folder: Path) -> list[Path]:
    """The image files of `folder` by suffix, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def unreadable_image(path: Path) -> str | None:
    """Why Pillow cannot read `path` as an image, or None: its header and structure are checked (a PNG's chunks
    and their checksums), without decoding the pixels."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # a damaged file makes Pillow raise many kinds of errors (OSError, SyntaxError, ...)
        return shortened(str(error)) or type(error).__name__
    return None


def grid_array(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """Images in [-1, 1] as one HxWx3 uint8 grid (one row by default): what PNGs and video frames hold."""
    # Imported here: torchvision's package import takes about 1 s beside torch's (its models and ops), which every
    # command that only checks images (validate, the sweep's driver) would pay.
    from torchvision.utils import make_grid

    grid = make_grid(
        images.detach().float().cpu().clamp(-1, 1),
        nrow=nrow or len(images),
        padding=padding,
        normalize=True,
        value_range=(-1, 1),
    )
    return grid.mul(255).round().byte().permute(1, 2, 0).numpy()


def save_grid(images: torch.Tensor, path: Path, label: str | None = None, nrow: int | None = None) -> None:
    """Write images in [-1, 1] as one PNG grid (one row by default); `label` goes into a PNG text chunk."""
    array = grid_array(images, nrow)
    info = PngImagePlugin.PngInfo()
    if label:
        info.add_text(PNG_LABEL_KEY, label)
    atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG", pnginfo=info))
