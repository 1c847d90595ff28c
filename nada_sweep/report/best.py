"""best/<domain>/: each domain's selected weights and selected.json, copied out of the trials folder.

A full fine-tuning winner's result is its generator.pt (~120 MB at 1024 px). A light-mode winner keeps its
domain.pt instead (kilobytes; `nada-sweep generate --domain` renders it on its base), unless export_full is
set (`report --export-full`, or `export_full: true` in the sweep file): then its folded generator.pt, which
every StyleGAN2 tool loads, is copied too. A file a previous report copied that the selection no longer
calls for is removed from best/ (its original stays in the trial folder).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from nada_sweep import run_files
from nada_sweep.report.results import Sweep, dumps
from nada_sweep.report.selection import DomainResult
from nada_sweep.run_files import atomic_write

WEIGHT_FILES = (run_files.GENERATOR, run_files.DOMAIN)


def copy_best(sweep: Sweep, domains: list[DomainResult], folder: Callable[[str], Path]) -> list[str]:
    """best/<domain>/ for every domain with a winner (`folder(name)` gives its checked path); returns warnings."""
    warnings = []
    for domain in domains:
        winner = domain.winner
        if winner is None:
            continue
        trial = winner.trial
        domain_file = trial.file(run_files.DOMAIN)
        generator = trial.file(run_files.GENERATOR)
        wanted = {run_files.DOMAIN: domain_file} if domain_file is not None else {}
        if domain_file is None or sweep.export_full:
            wanted[run_files.GENERATOR] = generator
        if domain_file is None and generator is None:
            warnings.append(f"{domain.name}: the selected trial {trial.trial_id} has no {run_files.GENERATOR} yet")
            continue
        if generator is None:
            warnings.append(f"{domain.name}: the selected trial {trial.trial_id} has no {run_files.GENERATOR} "
                            "to export; best/ holds its domain.pt only")
        target = folder(domain.name)
        for name in WEIGHT_FILES:
            source = wanted.get(name)
            if source is not None:
                _copy_if_changed(source, target / name)
            else:
                (target / name).unlink(missing_ok=True)
        saved_step = trial.generator_step
        if saved_step is not None and saved_step != winner.best_step:
            warnings.append(
                f"{domain.name}: {' and '.join(n for n in WEIGHT_FILES if wanted.get(n))} of trial {trial.trial_id} "
                f"holds step {saved_step} (the trial's own select_metric), not the selected step {winner.best_step}")
        info = {
            "domain": domain.name,
            "trial": trial.trial_id,
            "trial_folder": "/".join(trial.rel),
            "params": trial.mode,
            "trainable": trial.trainable,
            "files": sorted(name for name, path in wanted.items() if path is not None),
            "base_generator": trial.generator,
            "select_metric": sweep.selection.metric,
            "best_step": winner.best_step,
            "generator_step": saved_step,
            "collapsed": winner.collapsed,
            "metrics": winner.best,
            "random_weights": trial.random_weights,
        }
        text = dumps(info)
        atomic_write(target / "selected.json", lambda tmp, text=text: tmp.write_text(text))
    return warnings


def _copy_if_changed(source: Path, target: Path) -> None:
    if target.exists():
        a, b = source.stat(), target.stat()
        if a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns:
            return
    atomic_write(target, lambda tmp: shutil.copy2(source, tmp))
