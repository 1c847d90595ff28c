"""Photos and generators for the media tests: images the tiny generator rendered itself, saved as files."""

from __future__ import annotations

from pathlib import Path

import torch

from nada_sweep.images import save_grid
from nada_sweep.models.checkpoints import GeneratorSpec, build_generator, load_generator, save_generator
from nada_sweep.sampling import fixed_latents, render


def tiny_images(n: int, seed: int = 7) -> torch.Tensor:
    """`n` images the built-in tiny generator renders (truncation 0.7), in [-1, 1]."""
    g = load_generator("builtin:tiny").generator
    return render(g, fixed_latents(g, n, seed, 0.7))


def photo_folder(folder: Path, n: int = 2, seed: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(tiny_images(n, seed)):
        save_grid(image[None], folder / f"face{i}.png")
    return folder


def other_generator(path: Path) -> Path:
    """A generator of another architecture (32 px, style_dim 32) than builtin:tiny."""
    spec = GeneratorSpec(size=32, style_dim=32, n_mlp=1, channels={4: 16, 8: 16, 16: 16, 32: 16})
    save_generator(path, build_generator(spec), metadata={"random_weights": True})
    return path


def sweep_with_photos(base: Path) -> tuple[Path, Path]:
    """Two real tiny domains, 3 photos inverted with their source generator, then report --photos --videos."""
    from report_helpers import real_trial

    from nada_sweep.cli import main

    root = base / "demo-sweep"
    real_trial(root, "sketch", "k0", target="pencil sketch", k=0, steps=2)
    real_trial(root, "anime", "k0", target="anime painting", k=0, steps=2)
    latents = base / "latents.pt"
    assert main(["invert", str(photo_folder(base / "photos", n=3)), "--generator", "builtin:tiny",
                 "--out", str(latents), "--steps", "2"]) == 0
    assert main(["report", str(root), "--photos", str(latents), "--videos", "--video-frames", "16"]) == 0
    return root, latents
