"""`nada-sweep invert`, `nada-sweep video` and the --photos / --videos steps of `report` and `run`.

Each checks every input before it writes anything (one UserError otherwise) and shows a progress bar.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from nada_sweep.devices import resolve_device
from nada_sweep.errors import UserError
from nada_sweep.images import save_grid
from nada_sweep.media.encode import check_output, default_suffix, write_video
from nada_sweep.media.invert import invert
from nada_sweep.media.latents import Latents, load_latents, render_latents, save_latents
from nada_sweep.media.perceptual import PerceptualChoice, choose_perceptual
from nada_sweep.media.photos import read_photos
from nada_sweep.media.settings import InvertSettings, VideoSettings
from nada_sweep.media.sweep_media import check_photos, render_morphs, render_photos
from nada_sweep.media.video import WeightMorph, morph_frames, walk_frames, walk_latents
from nada_sweep.models.checkpoints import is_random_weight, load_generator
from nada_sweep.report import domain_winners
from nada_sweep.paths import output_folder_problem
from nada_sweep.run_files import RANDOM_WEIGHT_LABEL, output_file_problem
from nada_sweep.sampling import fixed_latents

DEFAULT_CLIP = "ViT-B/32"  # the CLIP-feature term for real generators; random-weight ones get builtin:tiny


@contextmanager
def progress_bar(console: Console) -> Iterator[Progress]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        yield progress


def reconstructions_dir(out: Path) -> Path:
    """The folder beside a latents file that holds its reconstructions."""
    return out.with_name(out.stem + "_reconstructions")


def invert_command(
    photos_dir: Path,
    generator: str,
    out: Path,
    settings: InvertSettings,
    *,
    perceptual: PerceptualChoice = "auto",
    clip: str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    console: Console,
) -> Latents:
    """Invert every photo of `photos_dir`; writes `out` and <out stem>_reconstructions/ beside it."""
    problems = settings.check()
    if problems:
        raise UserError("; ".join(problems))
    problem = output_file_problem(out, (".pt",)) or output_folder_problem(reconstructions_dir(out))
    if problem:
        raise UserError(f"--out: {problem}")
    recon = reconstructions_dir(out)
    existing = [str(p) for p in (out, recon) if p.exists()]
    if existing and not overwrite:
        raise UserError(f"--out: {' and '.join(existing)} already exist; pass --overwrite to replace them")
    torch_device = resolve_device(device, "--device")
    loaded = load_generator(generator, torch_device)
    photos = read_photos(photos_dir, loaded.generator.size)
    clip_name = clip or ("builtin:tiny" if is_random_weight(loaded) else DEFAULT_CLIP)
    term = choose_perceptual(perceptual, clip_name, torch_device)
    console.print(Text(f"perceptual term: {term.name}" + (f" ({term.why})" if term.why else "")))
    total = settings.steps * math.ceil(len(photos) / settings.batch)
    with progress_bar(console) as progress:
        task = progress.add_task(f"inverting {len(photos)} photos", total=total, info="")

        def on_step(done: int, losses: dict[str, float]) -> None:
            progress.update(task, completed=done, info=f"mse {losses['mse']:.4f} perceptual {losses['perceptual']:.4f}")

        latents = invert(loaded, photos, term, settings, on_step)
    latents.path = out
    save_latents(out, latents)
    images = render_latents(loaded.generator, latents)
    label = RANDOM_WEIGHT_LABEL if latents.random_weights else None
    for name, image in zip(latents.names, images):
        save_grid(image[None], recon / f"{name}.png", label)
    save_grid(torch.cat([latents.photos_float(), images]), recon / "compare.png", label, nrow=len(images))
    for name, mse, distance in zip(latents.names, latents.mse, latents.perceptual_loss):
        console.print(Text(f"  {name}: mse {mse:.4f}, perceptual {distance:.4f}"))
    console.print(Text(f"wrote {out} and {recon}/ (compare.png: photos above, reconstructions below)"))
    if label:
        console.print(Text(label, style="yellow"))
    return latents


def _video_out(out: str | None, default_stem: str) -> Path:
    return Path(out) if out else Path(default_stem + default_suffix())


def walk_command(generators: list[str], results: str | None, out: str | None, settings: VideoSettings, *,
                 device: str = "auto", overwrite: bool = False, console: Console) -> Path:
    """A latent walk rendered side by side by `generators` (or a sweep's source plus every domain's best)."""
    settings.check(walk=True)
    names = list(generators)
    if results:
        winners = domain_winners(results)
        if not winners:
            raise UserError(f"--results: {results}: no domain has a selected trial with a generator.pt yet")
        names = [winners[0].source_generator, *names, *(str(w.generator) for w in winners)]
    if not names:
        raise UserError("video walk: give one or more generator files, or --results DIR")
    path = _video_out(out, "walk")
    check_output(path, overwrite)
    torch_device = resolve_device(device, "--device")
    loaded = [load_generator(name, torch_device) for name in names]
    sizes = {item.generator.size for item in loaded}
    if len(sizes) > 1 or len({item.generator.style_dim for item in loaded}) > 1:
        raise UserError(f"video walk: the generators differ in size or style_dim ({', '.join(names)}); a walk shows "
                        "one latent through generators adapted from the same source")
    w = walk_latents(loaded[0].generator, settings, loaded[0].latent_avg)
    with progress_bar(console) as progress:
        task = progress.add_task(f"walk through {len(loaded)} generators", total=settings.frames, info="")
        frames = write_video(path, walk_frames([item.generator for item in loaded], w), settings.fps,
                             lambda: progress.advance(task))
    console.print(Text(f"wrote {path} ({frames} frames, {len(loaded)} generators left to right: {', '.join(names)})"))
    return path


def morph_command(source: str, target: str, out: str | None, settings: VideoSettings, *, device: str = "auto",
                  overwrite: bool = False, console: Console) -> Path:
    """`settings.samples` latents rendered while the weights move from `source` to `target`."""
    settings.check()
    path = _video_out(out, "morph")
    check_output(path, overwrite)
    torch_device = resolve_device(device, "--device")
    start, end = load_generator(source, torch_device), load_generator(target, torch_device)
    morph = WeightMorph(start.generator, end.generator, (source, target))
    w = fixed_latents(start.generator, settings.samples, settings.seed, settings.truncation, start.latent_avg)
    with progress_bar(console) as progress:
        task = progress.add_task("morph", total=settings.frames, info="")
        frames = write_video(path, morph_frames(morph, w, settings.frames), settings.fps,
                             lambda: progress.advance(task))
    console.print(Text(f"wrote {path} ({frames} frames, {source} -> {target})"))
    return path


def sweep_media(
    results_dir: Path | str,
    *,
    photos: str | None,
    videos: bool,
    video_frames: int = 48,
    select_metric: str | None = None,
    collapse_threshold: float | None = None,
    console: Console,
) -> None:
    """Render what the gallery's photo section (--photos) and morph-video links (--videos) show.

    Every input is checked first: a latents file the sweep's generator cannot render is refused before any
    file is written.
    """
    if not photos and not videos:
        return
    settings = VideoSettings(frames=video_frames, fps=24)
    settings.check("--video-frames")
    latents = load_latents(photos) if photos else None
    winners = domain_winners(results_dir, select_metric=select_metric, collapse_threshold=collapse_threshold)
    root = Path(results_dir).resolve()
    device = resolve_device("auto")
    if latents is not None:
        check_photos(latents, winners, device)
    if not winners:
        console.print(Text("no domain has a selected trial with a generator.pt yet: no photos or videos rendered",
                           style="yellow"))
        return
    if latents is not None:
        with progress_bar(console) as progress:
            task = progress.add_task("your photos in each domain", total=len(winners), info="")
            render_photos(root, latents, winners, device, lambda domain: progress.advance(task))
    if videos:
        suffix = default_suffix()
        with progress_bar(console) as progress:
            task = progress.add_task(f"morph videos ({suffix[1:]})", total=len(winners) * settings.frames, info="")
            made, _ = render_morphs(root, winners, settings, suffix, device, lambda: progress.advance(task))
            progress.update(task, completed=len(winners) * settings.frames)  # domains already up to date
        kept = len(winners) - len(made)
        console.print(Text(f"morph videos: {len(made)} rendered" + (f", {kept} already up to date" if kept else "")))
