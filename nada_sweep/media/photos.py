"""A folder of the user's photos, read as square generator-sized tensors.

Every photo is centre-cropped to a square and resized to the generator's resolution, as the StyleGAN2
projectors do. Faces must be aligned the FFHQ way first (see the README): a generator of faces only
reproduces faces placed, scaled and rotated as in its training set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from nada_sweep.errors import UserError
from nada_sweep.images import IMAGE_SUFFIXES


@dataclass
class Photo:
    name: str  # the file's stem, unique within the folder
    image: torch.Tensor  # [3, size, size] in [-1, 1]


def square(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of `image`, resized to `size` x `size` (Lanczos)."""
    return ImageOps.fit(image, (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def photo_files(where: Path) -> list[Path]:
    """The photo files of a folder (hidden files ignored), or the one file given."""
    if where.is_file():
        return [where]
    if not where.is_dir():
        raise UserError(f"photos: {where} does not exist; give a folder of photos (or one photo)")
    files = sorted(p for p in where.iterdir() if not p.name.startswith(".") and p.is_file())
    if not files:
        raise UserError(f"photos: {where} holds no files; put the (aligned) photos to invert there")
    return files


def read_photos(where: Path | str, size: int) -> list[Photo]:
    """Every photo under `where` as a Photo; refuses (naming the files) when any file is not an image."""
    files = photo_files(Path(where))
    photos, bad = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                upright = ImageOps.exif_transpose(image)  # phones store rotation in EXIF
                photos.append(Photo(path.stem, to_tensor(square(upright, size))))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
            bad.append(f"{path.name} ({type(error).__name__})")
    if bad:
        raise UserError(f"photos: {where}: not readable images: {', '.join(bad)}; the folder must hold only "
                        f"photos ({', '.join(IMAGE_SUFFIXES)})")
    stems = [photo.name for photo in photos]
    twins = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twins:
        raise UserError(f"photos: {where}: several files share the name {', '.join(twins)} (e.g. a.png and "
                        "a.jpg); rename one, the latents file names photos by their file stem")
    return photos
