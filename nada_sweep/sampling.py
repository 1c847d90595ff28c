"""Fixed, seeded latents: the same seed gives the same w for every trial, domain and command."""

from __future__ import annotations

import torch

from nada_sweep.models.stylegan2 import Generator

MEAN_LATENT_SAMPLES = 4096


def fixed_latents(
    generator: Generator, n: int, seed: int, truncation: float, latent_avg: torch.Tensor | None = None
) -> torch.Tensor:
    """`n` truncated w vectors drawn from `seed`, without touching the global RNG streams.

    Truncation pulls towards `latent_avg` when the checkpoint carries one, else towards a seeded estimate.
    """
    device = next(generator.parameters()).device
    seeded = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = generator.style(torch.randn(n, generator.style_dim, generator=seeded).to(device))
        if truncation == 1:
            return w
        if latent_avg is None:
            z = torch.randn(MEAN_LATENT_SAMPLES, generator.style_dim, generator=seeded).to(device)
            center = generator.style(z).mean(0, keepdim=True)
        else:
            center = latent_avg.to(device).reshape(1, -1)
        return center + truncation * (w - center)


def render(generator: Generator, w: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Images of `w` with the generator's fixed noise buffers, in chunks to bound memory, clamped to [-1, 1]."""
    with torch.no_grad():
        parts = [generator([part], input_is_latent=True, randomize_noise=False)[0] for part in w.split(chunk)]
    return torch.cat(parts).clamp(-1, 1)
