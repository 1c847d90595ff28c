"""The settings of `nada-sweep invert` and `nada-sweep video`, torch-free so the command line can show their
defaults without loading torch (`nada-sweep report` never loads it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from nada_sweep.adapt.settings import MAX_SEED
from nada_sweep.errors import UserError


@dataclass
class InvertSettings:
    steps: int = 1000  # optimisation steps per batch of photos
    lr: float = 0.1  # peak Adam learning rate
    lr_rampup: float = 0.05  # fraction of the steps over which the learning rate rises from 0
    lr_rampdown: float = 0.25  # fraction of the steps over which it falls back to 0 (cosine)
    noise: float = 0.05  # initial code noise, in units of the std of w
    noise_ramp: float = 0.75  # fraction of the steps after which the code noise is gone
    noise_regularize: float = 1e5  # weight of the noise maps' autocorrelation penalty
    mse: float = 1.0  # weight of the pixel MSE
    perceptual_weight: float = 1.0  # weight of the perceptual distance
    batch: int = 4  # photos optimised together
    seed: int = 0  # seeds the mean-w samples, the initial noise maps and the code noise

    def check(self) -> list[str]:
        """Problems with these settings, each naming its option."""
        problems = [f"--{name.replace('_', '-')}: {value} must be a finite number"
                    for name, value in asdict(self).items() if isinstance(value, float) and not math.isfinite(value)]
        if problems:
            return problems  # the range checks below would only repeat them
        if self.steps < 1:
            problems.append(f"--steps: {self.steps} must be at least 1")
        if self.batch < 1:
            problems.append(f"--batch: {self.batch} must be at least 1")
        if not self.lr > 0:
            problems.append(f"--lr: {self.lr} must be > 0")
        for name in ("lr_rampup", "lr_rampdown", "noise_ramp"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                problems.append(f"--{name.replace('_', '-')}: {value} must be in (0, 1]")
        for name in ("noise", "noise_regularize", "mse", "perceptual_weight"):
            if not getattr(self, name) >= 0:
                problems.append(f"--{name.replace('_', '-')}: {getattr(self, name)} must be >= 0")
        if self.mse == 0 and self.perceptual_weight == 0:
            problems.append("--mse and --perceptual-weight are both 0: nothing would pull the code towards the photo")
        problems.extend(seed_problems(self.seed))
        return problems



def seed_problems(seed: int) -> list[str]:
    """--seed out of the range torch can seed with, as a problem naming the option."""
    return [] if 0 <= seed <= MAX_SEED else [f"--seed: {seed} must be in 0..{MAX_SEED}"]


MAX_FRAMES = 10_000
MAX_FPS = 120
MAX_SAMPLES = 64


@dataclass
class VideoSettings:
    frames: int = 120  # frames in the file
    fps: int = 30  # frames per second
    seed: int = 0  # seeds the latents
    truncation: float = 0.7  # truncation psi of the latents
    keyframes: int = 4  # walk: latents visited (then back to the first, so the walk loops)
    samples: int = 4  # morph: latents shown side by side

    def check(self, frames_option: str = "--frames", walk: bool = False) -> None:
        """One UserError naming every option out of range (`frames_option`: what the command calls frames);
        --keyframes only for a `walk`, the one video that visits them."""
        problems = seed_problems(self.seed)
        if not 2 <= self.frames <= MAX_FRAMES:
            problems.append(f"{frames_option}: {self.frames} must be in 2..{MAX_FRAMES}")
        if not 1 <= self.fps <= MAX_FPS:
            problems.append(f"--fps: {self.fps} must be in 1..{MAX_FPS}")
        if not 0 < self.truncation <= 1:
            problems.append(f"--truncation: {self.truncation} must be in (0, 1]")
        if walk and not 2 <= self.keyframes <= max(2, self.frames):
            problems.append(f"--keyframes: {self.keyframes} must be in 2..{max(2, self.frames)} (at most --frames)")
        if not 1 <= self.samples <= MAX_SAMPLES:
            problems.append(f"--samples: {self.samples} must be in 1..{MAX_SAMPLES}")
        if problems:
            raise UserError("; ".join(problems))
