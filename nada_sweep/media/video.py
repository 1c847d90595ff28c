"""Video frames: (a) a latent walk rendered by several generators side by side, (b) a morph from the source
generator into a domain.

A morph is anything with `at(t) -> Generator` (t = 0: the source, t = 1: the domain). Full trials morph by
interpolating every weight (WeightMorph); a light domain file (StyleSpace offsets) can morph by scaling its
offsets by t and folding them into a copy of the source, behind the same interface.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import torch

from nada_sweep.errors import UserError
from nada_sweep.images import grid_array
from nada_sweep.media.settings import VideoSettings
from nada_sweep.models.stylegan2 import Generator
from nada_sweep.sampling import fixed_latents, render


def ease(t: float) -> float:
    """Smooth start and stop (cosine), so keyframes and the morph's ends are not abrupt."""
    return 0.5 - 0.5 * math.cos(math.pi * t)


def walk_latents(generator: Generator, settings: VideoSettings, latent_avg: torch.Tensor | None = None) -> torch.Tensor:
    """[frames, style_dim] w: a loop through `keyframes` seeded latents, eased between each pair."""
    keys = fixed_latents(generator, settings.keyframes, settings.seed, settings.truncation, latent_avg)
    keys = torch.cat([keys, keys[:1]])
    positions = torch.arange(settings.frames, dtype=torch.float64) * settings.keyframes / settings.frames
    frames = []
    for position in positions.tolist():
        index = int(position)
        t = ease(position - index)
        frames.append(torch.lerp(keys[index], keys[index + 1], t))
    return torch.stack(frames)


def walk_frames(generators: Sequence[Generator], w: torch.Tensor) -> Iterator[np.ndarray]:
    """One frame per w: the same latent (and fixed noise) rendered by each generator, side by side."""
    for frame_w in w:
        yield grid_array(torch.cat([render(g, frame_w[None]) for g in generators]), padding=0)


class Morph(Protocol):
    def at(self, t: float) -> Generator:
        """The generator a fraction t of the way from the source (0) to the domain (1)."""
        ...


class WeightMorph:
    """Every floating-point weight and buffer interpolated linearly between two generators of one architecture."""

    def __init__(self, source: Generator, target: Generator, names: tuple[str, str] = ("source", "target")):
        a, b = source.state_dict(), target.state_dict()
        if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
            raise UserError(f"morph: {names[0]} and {names[1]} have different architectures (sizes "
                            f"{source.size} and {target.size}); a morph needs a generator and one adapted from it")
        self._a, self._b = a, b
        self._work = copy.deepcopy(source)

    def at(self, t: float) -> Generator:
        mixed = {k: torch.lerp(v, self._b[k], t) if v.is_floating_point() else v for k, v in self._a.items()}
        self._work.load_state_dict(mixed)
        return self._work


def morph_frames(morph: Morph, w: torch.Tensor, frames: int) -> Iterator[np.ndarray]:
    """`frames` frames from t = 0 to t = 1 (eased): the latents `w` rendered side by side at each t."""
    for i in range(frames):
        yield grid_array(render(morph.at(ease(i / (frames - 1))), w), padding=0)
