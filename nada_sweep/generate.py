"""`nada-sweep generate`: render a grid from any rosinality-format generator file."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from nada_sweep.devices import resolve_device
from nada_sweep.adapt.mapper import load_mapper, mapped_latents
from nada_sweep.images import save_grid
from nada_sweep.media.latents import check_generator, load_latents, render_codes
from nada_sweep.models.checkpoints import is_random_weight, load_generator
from nada_sweep.run_files import MAPPER, RANDOM_WEIGHT_LABEL
from nada_sweep.sampling import fixed_latents, render


def generate_grid(
    generator: str,
    out: Path,
    *,
    n: int = 16,
    seed: int = 0,
    truncation: float = 1.0,
    device: str = "auto",
    use_mapper: bool = True,
    latents: Path | None = None,
) -> tuple[Path, bool]:
    """Render `n` seeded samples of `generator` into one roughly square PNG grid at `out`.

    A latent mapper saved beside the generator file (mapper.pt) is applied unless `use_mapper` is False.
    With `latents` (a file from `nada-sweep invert`) its photo codes are rendered instead of seeded samples.
    Returns the grid's path and whether a mapper was applied.
    """
    torch_device = resolve_device(device)
    codes = load_latents(latents) if latents is not None else None
    loaded = load_generator(generator, torch_device)
    g = loaded.generator.eval()
    if codes is not None:
        check_generator(codes, g, generator)
    mapper_path = Path(generator).with_name(MAPPER)
    mapper = load_mapper(mapper_path, torch_device) if use_mapper and mapper_path.is_file() else None
    if codes is not None:
        w_plus = codes.latents.to(torch_device)
        if mapper:
            with torch.no_grad():
                w_plus = mapper(w_plus)
        images = render_codes(g, w_plus, codes.noise)
        n = len(w_plus)
    else:
        w = fixed_latents(g, n, seed, truncation, loaded.latent_avg)
        images = render(g, mapped_latents(mapper, g, w) if mapper else w)
    label = RANDOM_WEIGHT_LABEL if is_random_weight(loaded) else None
    save_grid(images, out, label, nrow=math.ceil(math.sqrt(n)))
    return out, mapper is not None

