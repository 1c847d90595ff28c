"""morphs/: each light-mode winner's domain scaled from the source (t = 0) to the domain (t = 1), as PNGs.

A light mode's domain is offsets that are zero at the source, so t * offsets walks from the source
generator to the domain (nada_sweep.adapt.domains.scale_domain). One grid per domain whose selected trial
has a domain.pt: one row per sample, one column per t. The report (which imports no torch) shows what
morphs/manifest.json lists; a domain whose grid is on disk for the same trial, domain file and settings
is not rendered again. torch is imported only to render, so that a sweep without light-mode winners
never loads it here.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from nada_sweep.report import DomainWinner, domain_winners
from nada_sweep.report.results import safe_name
from nada_sweep.run_files import RANDOM_WEIGHT_LABEL, SweepFolder, manifest_entries, write_json

STEPS = 5  # t = 0, 0.25, 0.5, 0.75, 1
SAMPLES = 3
SEED = 0
TRUNCATION = 0.7


def morph_rows(root: Path | str, *, select_metric: str | None = None, collapse_threshold: float | None = None,
               device: str = "auto", console: Console | None = None) -> list[str]:
    """morphs/<domain>.png for each domain whose selected trial is a light one; returns the domains rendered.

    Loads torch only when there is such a domain, so `report` on a sweep of full fine-tunings stays light.
    """
    winners = domain_winners(root, select_metric=select_metric, collapse_threshold=collapse_threshold)
    light = [winner for winner in winners if winner.domain_file is not None]
    if not light:
        return []
    made, warnings = render_domain_morphs(Path(root), light, device)
    if console is not None:
        for warning in warnings:
            console.print(Text(f"warning: {warning}", style="yellow"))
    return made


def render_domain_morphs(root: Path, winners: list[DomainWinner], device: str = "auto") -> tuple[list[str], list[str]]:
    """morphs/<domain>.png for every winner with a domain.pt; returns the domains rendered now and warnings
    (a domain whose base generator is gone or differs is skipped)."""
    import torch

    from nada_sweep.adapt.domains import apply_domain, load_domain, resolve_base, scale_domain
    from nada_sweep.devices import resolve_device
    from nada_sweep.errors import UserError
    from nada_sweep.images import save_grid
    from nada_sweep.models.checkpoints import load_generator
    from nada_sweep.sampling import fixed_latents, render

    light = [winner for winner in winners if winner.domain_file is not None]
    folder = SweepFolder(root).morphs
    manifest = folder / SweepFolder.MANIFEST
    torch_device = resolve_device(device)
    previous = manifest_entries(manifest)
    steps = [i / (STEPS - 1) for i in range(STEPS)]
    taken: set[str] = set()
    entries, made, warnings = [], [], []
    for winner in light:
        assert winner.domain_file is not None
        name = safe_name(winner.domain, taken) + ".png"
        entry = {"domain": winner.domain, "trial": winner.trial, "image": name, "steps": steps,
                 "samples": SAMPLES, "seed": SEED, "truncation": TRUNCATION,
                 "domain_mtime_ns": winner.domain_file.stat().st_mtime_ns}
        if previous.get(winner.domain) == entry and (folder / name).is_file():
            entries.append(entry)
            continue
        try:
            domain = load_domain(winner.domain_file)
            base = load_generator(resolve_base(domain, None, str(winner.domain_file)), torch_device)
        except UserError as error:
            warnings.append(f"{winner.domain}: no morph row ({error})")
            continue
        w = fixed_latents(base.generator, SAMPLES, SEED, TRUNCATION, base.latent_avg)
        frames = torch.stack([render(apply_domain(scale_domain(domain, t), base.generator), w) for t in steps], 1)
        label = RANDOM_WEIGHT_LABEL if winner.random_weights else None
        save_grid(frames.flatten(0, 1), folder / name, label, nrow=STEPS)  # a row per sample, a column per t
        entries.append(entry)
        made.append(winner.domain)
    write_json(manifest, {"random_weights": any(w.random_weights for w in light), "domains": entries})
    return made, warnings
