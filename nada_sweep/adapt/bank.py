"""The shared frozen bank: the frozen side of training (latents, source images' CLIP embeddings) computed once
per sweep and read by every trial instead of being rendered again each step.

The frozen side of a step depends only on the latents, the noise of the source render, the source generator
and the guiding CLIP models -- not on the domain's prompts nor on the trial's hyperparameters. So every trial
of a sweep that shares (generator, CLIP models, seed, batch, mixing) can share it.

Entry i of a bank is a pure function of (seed, i): its own seeded RNG draws the latents, the style-mixing
decision and crossover, and the noise maps of the source render. Step i of a trial uses entry i, so
- a trial's latents are i.i.d. draws, exactly as fresh sampling gives, and never repeat within the trial;
- a trial's result does not depend on whether the bank file existed, how large it was, or which trial built
  it: an entry missing from the file (bank too small, still being built by another trial, patch loss) is
  computed on the spot with the same function and gives the same values (to float rounding);
- trials with different seeds (e.g. repeats) get different banks; trials with the same seed see the same
  latents, as they would with live sampling from the same seed.

With style mixing the entry stores both w and the crossover index, and the trained generator renders the
same W+ as the source (the reference draws a new crossover for each render).

The file lives in the sweep's results folder (bank/<key>.pt), keyed by a hash of the generator file, the CLIP
models, seed, batch, mixing and CLIP precision; the first trial that needs it builds it under a file lock
while concurrent trials compute their entries live (no worker waits), and later trials, restored or rerun
ones included, load it. The source noise differs from the trained side's noise, as in live sampling where each render
draws its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nada_sweep import run_files
from nada_sweep.adapt.settings import AdaptConfig
from nada_sweep.models.cache import file_identity

if TYPE_CHECKING:
    from nada_sweep.adapt.nada import Adaptation, FrozenBatch

BANK_FORMAT = 1  # bump when what an entry holds or how it is drawn changes: old files are then ignored


def _file_identity(spec: str) -> str:
    """A model spec as the bank key sees it: a file by path, size and mtime (a changed file is another model)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return ":".join(map(str, file_identity(path)))
    return spec  # a name: builtin:tiny, or an OpenAI CLIP name


def bank_key(config: AdaptConfig) -> str:
    """What the frozen side depends on, hashed: generator, guiding CLIP models (in order), seed, batch, mixing,
    CLIP precision (bf16 autocast, TF32)."""
    identity = {
        "format": BANK_FORMAT,
        "generator": _file_identity(config.generator),
        "clip": [_file_identity(spec.name) for spec in config.clip],
        "seed": config.seed,
        "batch": config.batch,
        "mixing": config.mixing,
        # Embeddings computed under bf16 autocast or with TF32 matmuls differ (on CUDA) from fp32 ones.
        "bf16_clip": config.cuda_bf16_clip,
        "tf32": config.cuda_tf32,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _group(config: AdaptConfig) -> tuple:
    # The same grouping as bank_key, without touching the file system (the driver may lack the files).
    return (config.generator, tuple(spec.name for spec in config.clip), config.seed, config.batch, config.mixing,
            config.cuda_bf16_clip, config.cuda_tf32)


def bank_entries(configs: Sequence[AdaptConfig]) -> list[int]:
    """For each trial, how many entries its bank should hold: the most steps of any trial sharing the bank."""
    most: dict[tuple, int] = {}
    for config in configs:
        most[_group(config)] = max(most.get(_group(config), 0), config.steps)
    return [most[_group(config)] for config in configs]


def _entry_seed(seed: int, index: int) -> int:
    digest = hashlib.sha256(f"nada-sweep frozen bank/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class BankEntry:
    """One step's frozen side: w (and the mixing partner), its source embeddings and, if asked, source images."""

    w: torch.Tensor  # [batch, style_dim]
    w_mix: torch.Tensor  # [batch, style_dim]; used from index `crossover` on
    crossover: int  # n_latent means no mixing
    source_embeddings: list[torch.Tensor]  # per guiding CLIP model, [batch, D]
    source_images: torch.Tensor | None = None

    def w_plus(self, n_latent: int) -> torch.Tensor:
        """[batch, n_latent, style_dim]: the W+ both generators render."""
        return torch.cat(
            [self.w.unsqueeze(1).expand(-1, self.crossover, -1),
             self.w_mix.unsqueeze(1).expand(-1, n_latent - self.crossover, -1)],
            dim=1,
        )


def compute_entry(adaptation: Adaptation, index: int, keep_images: bool = False) -> BankEntry:
    """Entry `index` of the bank of `adaptation.config`, computed now (a pure function of seed and index)."""
    config, g = adaptation.config, adaptation.g_frozen
    rng = torch.Generator().manual_seed(_entry_seed(config.seed, index))
    mixed = config.mixing > 0 and torch.rand((), generator=rng).item() < config.mixing
    z = torch.randn(config.batch, g.style_dim, generator=rng)
    crossover = g.n_latent
    z_mix = z
    if mixed:
        z_mix = torch.randn(config.batch, g.style_dim, generator=rng)
        # random.randint(1, n_latent - 1) in the reference generator: both ends included
        crossover = int(torch.randint(1, g.n_latent, (), generator=rng))
    noise = g.make_noise(config.batch, generator=rng)
    with torch.no_grad():
        w = g.style(z.to(adaptation.device))
        w_mix = g.style(z_mix.to(adaptation.device)) if mixed else w
        entry = BankEntry(w, w_mix, crossover, [])
        images = g([entry.w_plus(g.n_latent)], input_is_latent=True, noise=noise)[0]
        with adaptation.clip_precision():
            entry.source_embeddings = [e.float() for e in adaptation.guidance.embed_source(images)]
    if keep_images:
        entry.source_images = images
    return entry


def _save_bank(path: Path, key: str, entries: list[BankEntry]) -> None:
    models = len(entries[0].source_embeddings)
    data = {
        "format": BANK_FORMAT,
        "key": key,
        "w": torch.stack([e.w for e in entries]).cpu(),
        "w_mix": torch.stack([e.w_mix for e in entries]).cpu(),
        "crossover": torch.tensor([e.crossover for e in entries]),
        "source_embeddings": [torch.stack([e.source_embeddings[m] for e in entries]).cpu() for m in range(models)],
    }
    run_files.atomic_write(path, lambda tmp: torch.save(data, tmp))


def _load_bank(path: Path, key: str, device: torch.device) -> list[BankEntry] | None:
    """The entries of a bank file, or None when it is absent, unreadable or not this key's."""
    try:
        data = torch.load(path, map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError):  # absent, or damaged (e.g. a disk filled up)
        return None
    if not isinstance(data, dict) or data.get("format") != BANK_FORMAT or data.get("key") != key:
        return None
    embeddings = data["source_embeddings"]
    crossovers = data["crossover"].tolist()  # read at once: int() of each entry would wait for the GPU each time
    return [
        BankEntry(data["w"][i], data["w_mix"][i], crossover, [e[i] for e in embeddings])
        for i, crossover in enumerate(crossovers)
    ]


class BankedFrozenSide:
    """A FrozenSide that reads step i's frozen side from entry i of the shared bank (computing what it lacks)."""

    def __init__(self, adaptation: Adaptation, start_step: int = 0, bank_file: Path | None = None,
                 entries: list[BankEntry] | None = None) -> None:
        self.adaptation = adaptation
        self.position = start_step
        self.bank_file = bank_file  # polled while `entries` is None: another trial may be building it
        self.entries = entries
        self.key = bank_key(adaptation.config)
        # The patch loss crops the source images themselves, which the bank does not keep.
        self.needs_images = adaptation.config.lambda_patch > 0

    def entry(self, index: int) -> BankEntry:
        if self.entries is None and self.bank_file is not None and self.bank_file.exists():
            self.entries = _load_bank(self.bank_file, self.key, self.adaptation.device)
        if self.entries is not None and index < len(self.entries) and not self.needs_images:
            return self.entries[index]
        return compute_entry(self.adaptation, index, keep_images=self.needs_images)

    def next_batch(self, batch_size: int) -> FrozenBatch:
        from nada_sweep.adapt.nada import FrozenBatch

        if batch_size != self.adaptation.config.batch:
            raise ValueError(f"the bank holds batches of {self.adaptation.config.batch}, not {batch_size}")
        entry = self.entry(self.position)
        self.position += 1
        w_plus = entry.w_plus(self.adaptation.g_frozen.n_latent)
        return FrozenBatch([w_plus], entry.source_embeddings, entry.source_images)


def open_bank(adaptation: Adaptation, bank_dir: Path, size: int, start_step: int = 0) -> BankedFrozenSide:
    """The trial's frozen side from the bank in `bank_dir`, building the bank (`size` entries) if nobody has.

    Whoever takes the lock first builds; a trial that finds the lock taken does not wait: it computes its
    entries itself until the file appears. A bank file smaller than `size` is used as far as it goes.
    """
    key = bank_key(adaptation.config)
    if adaptation.config.lambda_patch > 0:
        return BankedFrozenSide(adaptation, start_step)
    bank_dir.mkdir(parents=True, exist_ok=True)
    path = bank_dir / f"{key}.pt"
    entries = _load_bank(path, key, adaptation.device) if path.exists() else None
    if entries is None:
        entries = _build_if_free(adaptation, bank_dir / f"{key}.lock", path, key, size)
    return BankedFrozenSide(adaptation, start_step, path, entries)


def _build_if_free(adaptation: Adaptation, lock_path: Path, path: Path, key: str, size: int
                   ) -> list[BankEntry] | None:
    try:
        with run_files.file_lock(lock_path):
            entries = _load_bank(path, key, adaptation.device) if path.exists() else None
            if entries is None:
                entries = [compute_entry(adaptation, i) for i in range(size)]
                _save_bank(path, key, entries)
            return entries
    except run_files.LockHeld:
        return None  # another trial is building it


def bank_frozen_side(bank_dir: Path | str, size: int) -> Callable[[Adaptation, int], BankedFrozenSide]:
    """A `frozen_side` factory for run_adaptation: the shared bank in `bank_dir`, `size` entries."""
    return lambda adaptation, start_step: open_bank(adaptation, Path(bank_dir), size, start_step)


__all__ = ["BankEntry", "BankedFrozenSide", "bank_entries", "bank_frozen_side", "bank_key",
           "compute_entry", "open_bank"]
