"""Photos projected into a generator's W+ by optimisation, the recipe of the StyleGAN2 projectors.

Per batch of photos: start every w index at the mean w (W+), add noise to the code that fades out over the
first `noise_ramp` of the run (so early steps explore), ramp the learning rate up over the first
`lr_rampup` and down with a cosine over the last `lr_rampdown`, and optimise code and noise maps together
on  mse * pixel MSE + perceptual_weight * perceptual distance + noise_regularize * noise autocorrelation.
The noise penalty keeps the per-layer noise maps from learning the picture themselves (it penalises their
spatial autocorrelation at every scale); after each step the maps are renormalised to zero mean, unit std.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

import torch
import torch.nn.functional as F

from nada_sweep.media.latents import Latents, generator_identity
from nada_sweep.media.perceptual import Perceptual
from nada_sweep.media.photos import Photo
from nada_sweep.media.settings import InvertSettings
from nada_sweep.models.checkpoints import LoadedGenerator

MEAN_SAMPLES = 10_000  # z samples behind the starting code (mean w) and the code's noise scale (std of w)


def learning_rate(t: float, settings: InvertSettings) -> float:
    """The ramped learning rate at progress t in [0, 1)."""
    down = min(1.0, (1 - t) / settings.lr_rampdown)
    down = 0.5 - 0.5 * math.cos(down * math.pi)
    return settings.lr * down * min(1.0, t / settings.lr_rampup)


def noise_penalty(maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum over maps and scales (down to 8x8) of the squared one-pixel autocorrelation, horizontal and vertical."""
    total = maps[0].new_zeros(())
    for noise in maps:
        while True:
            total = total + (noise * noise.roll(1, dims=3)).mean() ** 2 + (noise * noise.roll(1, dims=2)).mean() ** 2
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
    return total


def _normalise_(maps: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for noise in maps:
            noise.sub_(noise.mean()).div_(noise.std())


def _w_statistics(loaded: LoadedGenerator, seeded: torch.Generator) -> tuple[torch.Tensor, float]:
    g = loaded.generator
    device = g.input.input.device
    with torch.no_grad():
        w = g.style(torch.randn(MEAN_SAMPLES, g.style_dim, generator=seeded).to(device))
        mean = w.mean(0)
        std = ((w - mean).pow(2).sum() / MEAN_SAMPLES).sqrt().item()
    return mean, std


StepCallback = Callable[[int, dict[str, float]], None]


def invert(
    loaded: LoadedGenerator,
    photos: list[Photo],
    perceptual: Perceptual,
    settings: InvertSettings,
    on_step: StepCallback | None = None,
) -> Latents:
    """W+ codes (and noise maps) that make `loaded`'s generator render each photo.

    on_step(done, losses) is called after every optimisation step (done counts steps over all batches).
    """
    g = loaded.generator.eval().requires_grad_(False)
    device = g.input.input.device
    seeded = torch.Generator().manual_seed(settings.seed)
    w_mean, w_std = _w_statistics(loaded, seeded)
    codes, noises, mses, distances = [], [], [], []
    done = 0
    for start in range(0, len(photos), settings.batch):
        batch = photos[start:start + settings.batch]
        targets = torch.stack([photo.image for photo in batch]).to(device)
        code, maps, mse, distance = _fit(g, targets, perceptual, settings, w_mean, w_std, seeded,
                                         lambda i, losses: on_step(done + i, losses) if on_step else None)
        done += settings.steps
        codes.append(code)
        noises.append(maps)
        mses += mse
        distances += distance
    photos_uint8 = torch.stack([((p.image + 1) * 127.5).round().clamp(0, 255).to(torch.uint8) for p in photos])
    return Latents(
        names=[photo.name for photo in photos],
        latents=torch.cat(codes),
        noise=[torch.cat(layer) for layer in zip(*noises)],
        photos=photos_uint8,
        generator=generator_identity(loaded),
        perceptual=perceptual.name,
        mse=mses,
        perceptual_loss=distances,
        settings=asdict(settings),
    )


def _fit(
    g: torch.nn.Module,
    targets: torch.Tensor,
    perceptual: Perceptual,
    settings: InvertSettings,
    w_mean: torch.Tensor,
    w_std: float,
    seeded: torch.Generator,
    on_step: StepCallback,
) -> tuple[torch.Tensor, list[torch.Tensor], list[float], list[float]]:
    n = len(targets)
    device = targets.device
    code = w_mean.detach().clone().reshape(1, 1, -1).repeat(n, g.n_latent, 1).requires_grad_(True)
    maps = [m.requires_grad_(True) for m in g.make_noise(n, generator=seeded)]
    optimiser = torch.optim.Adam([code, *maps], lr=settings.lr)

    def losses(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mse = (images - targets).pow(2).flatten(1).mean(1)
        if perceptual.distance is None or settings.perceptual_weight == 0:
            return mse, torch.zeros_like(mse), settings.mse * mse.sum()
        distance = perceptual.distance(images, targets)
        return mse, distance, settings.mse * mse.sum() + settings.perceptual_weight * distance.sum()

    for step in range(settings.steps):
        t = step / settings.steps
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(t, settings)
        strength = w_std * settings.noise * max(0.0, 1 - t / settings.noise_ramp) ** 2
        jitter = torch.randn(code.shape, generator=seeded).to(device) * strength
        images = g([code + jitter], input_is_latent=True, noise=maps)[0]
        mse, distance, loss = losses(images)
        penalty = noise_penalty(maps)
        optimiser.zero_grad(set_to_none=True)
        (loss + settings.noise_regularize * penalty).backward()
        optimiser.step()
        _normalise_(maps)
        on_step(step + 1, {"mse": mse.mean().item(), "perceptual": distance.mean().item(),
                           "noise": penalty.item()})

    with torch.no_grad():
        mse, distance, _ = losses(g([code], input_is_latent=True, noise=maps)[0])
    return code.detach(), [m.detach() for m in maps], mse.tolist(), distance.tolist()
