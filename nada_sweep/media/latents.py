"""The latents file `nada-sweep invert` writes: W+ codes of photos, tied to the generator they fit.

A plain dict saved with torch.save and read back with weights_only=True (tensors, strings, numbers):
  format        "nada-sweep-latents", version 1
  names         photo names (file stems), one per latent
  latents       [N, n_latent, style_dim] W+ codes
  noise         one [N, 1, r, r] map per styled conv: the noise optimised with each code
  photos        [N, 3, size, size] uint8: the cropped, resized photos the codes were fitted to
  generator     {path, size, n_latent, style_dim, random_weights}: codes only mean something to generators of
                this architecture (the source generator and the generators adapted from it)
  perceptual    which perceptual term ran ("lpips (vgg)", "clip features (ViT-B/32)", "none")
  mse, perceptual_loss   the final loss of each photo; settings   the inversion settings
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nada_sweep.errors import UserError
from nada_sweep.models.checkpoints import LoadedGenerator
from nada_sweep.models.stylegan2 import Generator
from nada_sweep.models.weights_file import WeightsFileError, load_weights
from nada_sweep.run_files import atomic_write

FORMAT = "nada-sweep-latents"
VERSION = 1
IDENTITY = ("size", "n_latent", "style_dim")  # what must match for a code to be rendered by a generator


@dataclass
class Latents:
    names: list[str]
    latents: torch.Tensor
    noise: list[torch.Tensor]
    photos: torch.Tensor
    generator: dict[str, Any]
    perceptual: str
    mse: list[float] = field(default_factory=list)
    perceptual_loss: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # where it was read from

    @property
    def random_weights(self) -> bool:
        return bool(self.generator.get("random_weights"))

    def photos_float(self) -> torch.Tensor:
        """The photos in [-1, 1], as generators render."""
        return self.photos.float() / 127.5 - 1


def generator_identity(loaded: LoadedGenerator) -> dict[str, Any]:
    g = loaded.generator
    return {"path": loaded.source, "size": g.size, "n_latent": g.n_latent, "style_dim": g.style_dim,
            "random_weights": bool(loaded.metadata.get("random_weights"))}


def save_latents(path: Path, latents: Latents) -> None:
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "names": list(latents.names),
        "latents": latents.latents.detach().cpu(),
        "noise": [n.detach().cpu() for n in latents.noise],
        "photos": latents.photos.cpu(),
        "generator": dict(latents.generator),
        "perceptual": latents.perceptual,
        "mse": [float(v) for v in latents.mse],
        "perceptual_loss": [float(v) for v in latents.perceptual_loss],
        "settings": dict(latents.settings),
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_latents(path: Path | str) -> Latents:
    """Read a latents file; anything else (or a damaged one) is refused with a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--latents: {path} not found (make one with `nada-sweep invert PHOTOS --out {path.name}`)")
    try:
        data = load_weights(path)
    except (OSError, WeightsFileError) as error:
        reason = error.strerror if isinstance(error, OSError) else error
        raise UserError(f"--latents: {path}: not a readable latents file ({reason})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"--latents: {path}: not a latents file written by `nada-sweep invert`")
    if data.get("version") != VERSION:
        raise UserError(f"--latents: {path}: latents file version {data.get('version')!r}; this nada-sweep reads "
                        f"version {VERSION}")
    try:
        latents = Latents(
            names=[str(n) for n in data["names"]], latents=data["latents"], noise=list(data["noise"]),
            photos=data["photos"], generator=dict(data["generator"]), perceptual=str(data["perceptual"]),
            mse=list(data.get("mse", [])), perceptual_loss=list(data.get("perceptual_loss", [])),
            settings=dict(data.get("settings", {})), path=path,
        )
        n = len(latents.names)
        identity = [int(latents.generator[key]) for key in IDENTITY]
    except (KeyError, TypeError, ValueError) as error:
        raise UserError(f"--latents: {path}: incomplete latents file ({type(error).__name__}: {error})") from None
    size, n_latent, style_dim = identity
    shapes_ok = (
        tuple(latents.latents.shape) == (n, n_latent, style_dim)
        and tuple(latents.photos.shape) == (n, 3, size, size)
        and all(isinstance(m, torch.Tensor) and m.shape[0] == n for m in latents.noise)
    )
    if n == 0 or not shapes_ok:
        raise UserError(f"--latents: {path}: damaged latents file (shapes do not agree with its {n} photo names)")
    return latents


def describe(identity: dict[str, Any]) -> str:
    return ", ".join(f"{key} {identity.get(key)}" for key in IDENTITY)


def check_generator(latents: Latents, generator: Generator, name: str) -> None:
    """Refuse a generator whose architecture differs from the one the codes were fitted to."""
    theirs = {"size": generator.size, "n_latent": generator.n_latent, "style_dim": generator.style_dim}
    if any(int(latents.generator[key]) != theirs[key] for key in IDENTITY):
        raise UserError(
            f"--latents: {latents.path} was made for a generator with {describe(latents.generator)} "
            f"({latents.generator.get('path')}); {name} has {describe(theirs)}: its codes mean nothing there. "
            "Invert the photos with this generator (or the source generator it was adapted from)"
        )
    if len(latents.noise) != generator.num_layers:
        raise UserError(f"--latents: {latents.path}: {len(latents.noise)} noise maps, {name} needs "
                        f"{generator.num_layers}")


def render_codes(generator: Generator, codes: torch.Tensor, noise: list[torch.Tensor], chunk: int = 4) -> torch.Tensor:
    """W+ codes with their own optimised noise maps rendered by `generator`, clamped to [-1, 1]."""
    device = generator.input.input.device
    parts = []
    with torch.no_grad():
        for start in range(0, len(codes), chunk):
            maps = [n[start:start + chunk].to(device) for n in noise]
            w = codes[start:start + chunk].to(device)
            parts.append(generator([w], input_is_latent=True, noise=maps)[0].clamp(-1, 1).cpu())
    return torch.cat(parts)


def render_latents(generator: Generator, latents: Latents) -> torch.Tensor:
    """The photos' codes rendered by `generator`."""
    return render_codes(generator, latents.latents, latents.noise)
