"""`nada-sweep generate`: render a grid from any rosinality-format generator file."""

from __future__ import annotations

import math
from pathlib import Path

from nada_sweep.adapt.trainer import RANDOM_WEIGHT_LABEL, resolve_device
from nada_sweep.images import save_grid
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.sampling import fixed_latents, render


def generate_grid(
    generator: str, out: Path, *, n: int = 16, seed: int = 0, truncation: float = 1.0, device: str = "auto"
) -> Path:
    """Render `n` seeded samples of `generator` into one roughly square PNG grid at `out`."""
    loaded = load_generator(generator, resolve_device(device))
    g = loaded.generator.eval()
    w = fixed_latents(g, n, seed, truncation, loaded.latent_avg)
    images = render(g, w)
    label = RANDOM_WEIGHT_LABEL if loaded.metadata.get("random_weights") else None
    save_grid(images, out, label, nrow=math.ceil(math.sqrt(n)))
    return out

