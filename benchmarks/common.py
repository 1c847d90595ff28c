"""Shared set-up of the benchmarks: model files on disk, interleaved timing, a table printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from nada_sweep.models.checkpoints import save_generator
from nada_sweep.models.clip_models import build_tiny_clip, save_clip
from nada_sweep.models.stylegan2 import Generator


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
