"""Latent-mapper mining: an optional second stage that moves latents into the target region.

A StyleCLIP-style mapper: one small MLP per group of w indices (coarse, medium, fine) predicts an offset that
is added to each w, scaled by a factor. It is trained on the adapted (frozen) generator with the global CLIP
loss against the target text plus an L2 penalty on the offset, so latents move only as far as they must.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from nada_sweep.adapt.settings import MapperGroup, MapperSettings
from nada_sweep.errors import UserError
from nada_sweep.models.stylegan2 import Generator
from nada_sweep.models.weights_file import WeightsFileError, load_weights
from nada_sweep.run_files import atomic_write

# StyleCLIP's split of the 18 w indices of a 1024 generator: 0-3 coarse, 4-7 medium, the rest fine.
GROUP_STARTS = {"coarse": 0, "medium": 4, "fine": 8}


def group_indices(group: MapperGroup, n_latent: int) -> range:
    """The w indices of `group` for a generator with `n_latent` indices."""
    order = list(GROUP_STARTS)
    start = min(GROUP_STARTS[group], n_latent)
    following = order.index(group) + 1
    stop = n_latent if following == len(order) else min(GROUP_STARTS[order[following]], n_latent)
    return range(start, stop)


class _GroupMLP(nn.Sequential):
    def __init__(self, style_dim: int, depth: int) -> None:
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(0.2)]
        super().__init__(*layers[:-1])  # no activation on the offset itself


class LatentMapper(nn.Module):
    """Maps W+ latents [N, n_latent, style_dim] to moved W+ latents of the same shape."""

    def __init__(self, settings: MapperSettings, n_latent: int, style_dim: int) -> None:
        super().__init__()
        self.settings = settings
        self.n_latent = n_latent
        self.style_dim = style_dim
        self.groups = nn.ModuleDict({g: _GroupMLP(style_dim, settings.depth) for g in settings.groups})

    def offset(self, w_plus: torch.Tensor) -> torch.Tensor:
        # Normalise like the mapping network's PixelNorm so the MLP sees inputs of a fixed scale.
        normed = w_plus * torch.rsqrt(w_plus.square().mean(dim=-1, keepdim=True) + 1e-8)
        offset = torch.zeros_like(w_plus)
        for name, mlp in self.groups.items():
            indices = group_indices(name, self.n_latent)
            if len(indices):
                offset[:, indices.start : indices.stop] = mlp(normed[:, indices.start : indices.stop])
        return self.settings.scale * offset

    def forward(self, w_plus: torch.Tensor) -> torch.Tensor:
        return w_plus + self.offset(w_plus)


def to_w_plus(generator: Generator, w: torch.Tensor) -> torch.Tensor:
    return w.unsqueeze(1).repeat(1, generator.n_latent, 1)


def train_mapper(
    generator: Generator,
    settings: MapperSettings,
    clip_loss: Callable[[torch.Tensor], torch.Tensor],
    *,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> tuple[LatentMapper, list[float]]:
    """Train a mapper on the frozen `generator`; returns it and its per-step CLIP loss."""
    device = next(generator.parameters()).device
    generator.requires_grad_(False)
    torch.manual_seed(seed)
    mapper = LatentMapper(settings, generator.n_latent, generator.style_dim).to(device)
    optimiser = torch.optim.Adam(mapper.parameters(), lr=settings.lr)
    clip_losses: list[float] = []
    for step in range(settings.steps):
        with torch.no_grad():
            w = to_w_plus(generator, generator.style(torch.randn(settings.batch, generator.style_dim, device=device)))
        offset = mapper.offset(w)
        images = generator([w + offset], input_is_latent=True)[0]
        clip_part = clip_loss(images)
        loss = clip_part + settings.lambda_l2 * offset.square().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        clip_losses.append(clip_part.item())
        if on_step:
            on_step(step, clip_part.item())
    return mapper.eval(), clip_losses


def save_mapper(path: Path, mapper: LatentMapper) -> None:
    record = {
        "state_dict": {k: v.detach().cpu() for k, v in mapper.state_dict().items()},
        "settings": mapper.settings.model_dump(),
        "n_latent": mapper.n_latent,
        "style_dim": mapper.style_dim,
    }
    atomic_write(Path(path), lambda tmp: torch.save(record, tmp))


def load_mapper(path: Path, device: torch.device | str = "cpu") -> LatentMapper:
    try:
        record = load_weights(path)
        mapper = LatentMapper(MapperSettings(**record["settings"]), record["n_latent"], record["style_dim"])
        mapper.load_state_dict(record["state_dict"])
    except (OSError, WeightsFileError, RuntimeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{path}: not a readable nada-sweep latent mapper ({error})") from None
    return mapper.to(device).eval()


def mapped_latents(mapper: LatentMapper | None, generator: Generator, w: torch.Tensor) -> torch.Tensor:
    """W+ latents for `w` ([N, style_dim]), moved by `mapper` when there is one."""
    w_plus = to_w_plus(generator, w)
    if mapper is None:
        return w_plus
    with torch.no_grad():
        return mapper(w_plus)

