"""Shared set-up of the benchmarks: model files on disk, interleaved timing, a table printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from clip.model import CLIP

from nada_sweep.adapt.settings import LR_BY_PARAMS, AdaptConfig, ClipSpec
from nada_sweep.metric_rules import GPU_PEAK_MEM
from nada_sweep.models.checkpoints import save_generator
from nada_sweep.models.clip_models import CONTEXT_LENGTH, build_tiny_clip, save_clip
from nada_sweep.models.stylegan2 import Generator
from nada_sweep.run_files import RunFolder

# clip.model.CLIP's arguments for the shapes of OpenAI's models (embed_dim, image_resolution, vision_layers,
# vision_width, vision_patch_size, context_length, vocab_size, transformer_width, transformer_heads,
# transformer_layers): random weights of the real cost, where nothing can be downloaded.
CLIP_SHAPES: dict[str, tuple[int, ...]] = {
    "ViT-B/32": (512, 224, 12, 768, 32, CONTEXT_LENGTH, 49408, 512, 8, 12),
    "ViT-B/16": (512, 224, 12, 768, 16, CONTEXT_LENGTH, 49408, 512, 8, 12),
    "ViT-L/14": (768, 224, 24, 1024, 14, CONTEXT_LENGTH, 49408, 768, 12, 12),
}
TINY_CLIP = "tiny"  # build_tiny_clip's shape
PACK_TARGETS = ("pencil sketch", "oil painting", "watercolor", "pixar character")


def make_generator_file(folder: Path, size: int = 32, seed: int = 0) -> Path:
    """A seeded random rosinality-layout generator (style_dim 512, n_mlp 8, default channels) at `size` px."""
    path = folder / f"stylegan2-{size}px-seed{seed}.pt"
    if not path.exists():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = Generator(size)
        save_generator(path, generator, metadata={"random_weights": True})
    return path


def make_clip_files(folder: Path, count: int) -> list[Path]:
    """`count` different seeded tiny CLIP models (32 px ViT, 32-d embeddings) saved as state dicts."""
    paths = []
    for seed in range(count):
        path = folder / f"tiny-clip-seed{seed}.pt"
        if not path.exists():
            save_clip(build_tiny_clip(seed=seed), path)
        paths.append(path)
    return paths


def random_clip(shape: str, device: torch.device | str = "cpu", seed: int = 0) -> CLIP:
    """A seeded random-weight CLIP of `shape` (a CLIP_SHAPES name, or TINY_CLIP), built on `device`."""
    if shape == TINY_CLIP:
        return build_tiny_clip(seed=seed).to(device)
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        return CLIP(*CLIP_SHAPES[shape])


def make_shaped_clip_files(folder: Path, shapes: Sequence[str], device: torch.device | str = "cpu") -> list[Path]:
    """One random-weight CLIP file per entry of `shapes` (seeded by position, so two equal shapes differ), saved
    as state dicts that load_clip reads like any CLIP file."""
    paths = []
    for seed, shape in enumerate(shapes):
        path = folder / f"clip-{shape.replace('/', '-')}-seed{seed}.pt"
        if not path.exists():
            save_clip(random_clip(shape, device, seed), path)
        paths.append(path)
    return paths


def pack_configs(generator: str, clips: Sequence[str], steps: int, device: str = "cpu", members: int = 8,
                 params: str = "stylespace") -> list[AdaptConfig]:
    """The pack benchmarks' trials: batch 2, differing in lr (from the parametrization's default up) and target
    text, one evaluation at the end."""
    base = AdaptConfig(generator=generator, clip=[ClipSpec(name=name) for name in clips], source="photo",
                       target=PACK_TARGETS[0], params=params, steps=steps, eval_every=steps, n_eval=4,
                       n_samples=2, device=device)
    return [base.model_copy(update={"lr": LR_BY_PARAMS[params] * (1 + i // len(PACK_TARGETS)),
                                    "target": PACK_TARGETS[i % len(PACK_TARGETS)]}) for i in range(members)]


def final_metrics(folder: Path) -> dict[str, float]:
    """The numbers of a run folder's last evaluation that a pack must reproduce (not its time nor its memory)."""
    last = RunFolder(folder).history()[-1]
    return {k: v for k, v in last.items() if isinstance(v, float) and k not in ("elapsed_s", GPU_PEAK_MEM)}


def synchronize() -> None:
    """Wait for queued GPU work: CUDA calls return before the GPU is done, so a timer must wait for it first."""
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def interleaved(variants: dict[str, Callable[[], None]], reps: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each variant, the variants taking turns so that drifting machine load hits all alike."""
    for _ in range(warmup):
        for run in variants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(reps):
        for name, run in variants.items():
            synchronize()
            start = time.perf_counter()
            run()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    """Median of the per-round ratios a/b (rounds are adjacent in time, so load drift cancels)."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n{title}")
    for index, row in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
