"""The gallery's photo section and morph videos of a sweep, rendered into its results folder.

The report reads only files (and imports no torch), so the rendering happens here, before the report is
built: photos/ holds the photo row, its reconstruction by the source generator and one row per domain (the
same codes rendered by the domain's selected generator); videos/ holds one morph video per domain. Each
folder's manifest.json says what its files are and which trial made them, so the gallery can tell when a
domain's selection has changed since.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from nada_sweep.images import save_grid
from nada_sweep.media.encode import write_video
from nada_sweep.media.latents import Latents, check_generator, render_latents
from nada_sweep.media.settings import VideoSettings
from nada_sweep.media.video import WeightMorph, morph_frames
from nada_sweep.models.checkpoints import LoadedGenerator, load_generator
from nada_sweep.report import DomainWinner
from nada_sweep.report.results import safe_name
from nada_sweep.run_files import RANDOM_WEIGHT_LABEL, SweepFolder, manifest_entries, write_json
from nada_sweep.sampling import fixed_latents

PHOTO_ROW = "photos.png"
RECONSTRUCTION = "reconstruction.png"


def _label(random_weights: bool) -> str | None:
    return RANDOM_WEIGHT_LABEL if random_weights else None


def check_photos(latents: Latents, winners: list[DomainWinner], device: torch.device) -> None:
    """Refuse (before anything is written) latents that the sweep's source generators cannot render."""
    for source in sorted({winner.source_generator for winner in winners}):
        check_generator(latents, load_generator(source, device).generator, f"the sweep's generator {source}")


def render_photos(
    root: Path,
    latents: Latents,
    winners: list[DomainWinner],
    device: torch.device,
    on_domain: Callable[[str], None] | None = None,
) -> Path:
    """photos/: the photo row, the source generator's reconstruction, each domain's row; returns the manifest."""
    check_photos(latents, winners, device)
    folder = SweepFolder(root).photos
    random_weights = latents.random_weights or any(w.random_weights for w in winners)
    label = _label(random_weights)
    save_grid(latents.photos_float(), folder / PHOTO_ROW, label)
    sources = sorted({winner.source_generator for winner in winners}) or [str(latents.generator.get("path"))]
    source = load_generator(sources[0], device).generator
    save_grid(render_latents(source, latents), folder / RECONSTRUCTION, label)
    taken: set[str] = {PHOTO_ROW.removesuffix(".png"), RECONSTRUCTION.removesuffix(".png")}
    domains = []
    for winner in winners:
        generator = load_generator(winner.generator, device).generator
        check_generator(latents, generator, str(winner.generator))
        name = safe_name(winner.domain, taken) + ".png"
        save_grid(render_latents(generator, latents), folder / name, label)
        domains.append({"domain": winner.domain, "trial": winner.trial, "image": name})
        if on_domain:
            on_domain(winner.domain)
    manifest = folder / SweepFolder.MANIFEST
    write_json(manifest, {
        "latents": str(latents.path.resolve()) if latents.path else None,
        "names": latents.names,
        "perceptual": latents.perceptual,
        "inverted_with": latents.generator.get("path"),
        "source_generator": sources[0],
        "random_weights": random_weights,
        "photos": PHOTO_ROW,
        "reconstruction": RECONSTRUCTION,
        "mse": latents.mse,
        "domains": domains,
    })
    return manifest


def _source(name: str, device: torch.device, cache: dict[str, LoadedGenerator]) -> LoadedGenerator:
    if name not in cache:
        cache[name] = load_generator(name, device)
    return cache[name]


def render_morphs(
    root: Path,
    winners: list[DomainWinner],
    settings: VideoSettings,
    suffix: str,
    device: torch.device,
    on_frame: Callable[[], None] | None = None,
) -> tuple[list[str], Path]:
    """videos/<domain>.<suffix>: the source generator morphing into each domain's selected generator.

    A domain whose video is already on disk for the same trial, weights file and settings is not rendered
    again. Returns the domains rendered now and the manifest.
    """
    folder = SweepFolder(root).videos
    manifest = folder / SweepFolder.MANIFEST
    previous = manifest_entries(manifest)
    taken: set[str] = set()
    sources: dict[str, LoadedGenerator] = {}
    entries, made = [], []
    for winner in winners:
        name = safe_name(winner.domain, taken) + suffix
        entry = {"domain": winner.domain, "trial": winner.trial, "file": name, "frames": settings.frames,
                 "fps": settings.fps, "seed": settings.seed, "truncation": settings.truncation,
                 "samples": settings.samples, "generator_mtime_ns": winner.generator.stat().st_mtime_ns}
        entries.append(entry)
        if previous.get(winner.domain) == entry and (folder / name).is_file():
            continue
        source = _source(winner.source_generator, device, sources)
        target = load_generator(winner.generator, device).generator
        w = fixed_latents(source.generator, settings.samples, settings.seed, settings.truncation, source.latent_avg)
        morph = WeightMorph(source.generator, target, (winner.source_generator, str(winner.generator)))
        write_video(folder / name, morph_frames(morph, w, settings.frames), settings.fps, on_frame)
        made.append(winner.domain)
    write_json(manifest, {"random_weights": any(w.random_weights for w in winners), "domains": entries})
    return made, manifest
