"""The report of a sweep, rebuilt from the files on disk: leaderboard, gallery, plots, best generators.

`build_report(results_dir)` writes everything and returns index.html; `print_best_table` is the table the
terminal shows at the end of `run`. Both read only what the trials wrote, so they work on finished,
half-finished and partly failed sweeps alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from nada_sweep import run_files
from nada_sweep.errors import UserError
from nada_sweep.paths import output_folder_problem
from nada_sweep.report.leaderboard import best_rows, print_best, write_leaderboard
from nada_sweep.report.results import TRIALS, read_sweep
from nada_sweep.report.selection import rank_sweep

__all__ = ["DomainWinner", "best_per_domain", "build_report", "check_reportable", "domain_winners",
           "print_best_table"]


def check_reportable(results_dir: Path | str) -> None:
    """UserError unless `results_dir` is a sweep's results folder that holds trials and can be written into.

    What `report` asks first: an empty trials/ would give an empty gallery, which says nothing.
    """
    sweep = read_sweep(results_dir)
    if not sweep.trials:
        raise UserError(f"results folder: {results_dir}: {TRIALS}/ holds no trial yet, so there is nothing to "
                        "report; `nada-sweep run SWEEP` runs them (`status` shows a running sweep)")
    problem = output_folder_problem(sweep.root)
    if problem:
        raise UserError(f"results folder: the report is written into it, but {problem}")


def build_report(
    results_dir: Path | str,
    *,
    select_metric: str | None = None,
    collapse_threshold: float | None = None,
    export_full: bool | None = None,
    console: Console | None = None,
    running: bool = False,
) -> Path:
    """Write leaderboard.{csv,md,json}, index.html, domains/*.html (+ plots), thumbs/ and best/<domain>/.

    `select_metric`, `collapse_threshold` and `export_full` override sweep.resolved.yaml (default:
    clip_direction, 0.5, off: best/ holds a light-mode winner's domain.pt, not its folded generator.pt).
    `running`: built while the sweep runs (`run` rebuilds it every report_every finished trials).
    Raises UserError for a folder that is not a sweep's results folder or a bad selection setting.
    """
    # Imported here: the gallery pulls in matplotlib, jinja2 and PIL, which the sweep driver and its workers
    # (they import this package for its metric rules) should not pay for at start-up.
    from nada_sweep.report.gallery import write_pages

    sweep = read_sweep(results_dir, select_metric=select_metric, collapse_threshold=collapse_threshold,
                       export_full=export_full)
    domains = rank_sweep(sweep.trials, sweep.selection)
    document = write_leaderboard(sweep, domains, sweep.root)
    index, warnings = write_pages(sweep, domains, document, running=running)
    if console is not None:
        for warning in [*sweep.warnings, *warnings]:
            console.print(Text(f"warning: {warning}", style="yellow"))
    return index


def best_per_domain(
    results_dir: Path | str, *, select_metric: str | None = None, collapse_threshold: float | None = None
) -> list[dict[str, Any]]:
    """Each domain's selected trial as a row (domain, trial, prompts, k, lr, steps, best_step, metrics, ...)."""
    sweep = read_sweep(results_dir, select_metric=select_metric, collapse_threshold=collapse_threshold)
    return best_rows(rank_sweep(sweep.trials, sweep.selection), sweep.selection.metric)


def print_best_table(
    results_dir: Path | str,
    console: Console | None = None,
    *,
    select_metric: str | None = None,
    collapse_threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Print the best-per-domain table with rich (user text is never read as markup); returns its rows."""
    sweep = read_sweep(results_dir, select_metric=select_metric, collapse_threshold=collapse_threshold)
    rows = best_rows(rank_sweep(sweep.trials, sweep.selection), sweep.selection.metric)
    console = console or Console()
    print_best({"sweep": sweep.name, "select_metric": sweep.selection.metric, "best": rows}, console)
    if sweep.demo_label:
        console.print(Text(sweep.demo_label, style="yellow"))
    return rows


@dataclass
class DomainWinner:
    """A domain's selected trial, as the gallery shows it: what photos and morph videos are rendered with."""

    domain: str
    trial: str
    generator: Path  # the trial's generator.pt
    source_generator: str  # the generator the trial adapted (a path or builtin:<name>)
    random_weights: bool
    domain_file: Path | None = None  # the trial's domain.pt (light modes)


def domain_winners(
    results_dir: Path | str, *, select_metric: str | None = None, collapse_threshold: float | None = None
) -> list[DomainWinner]:
    """Each domain's selected trial that has a generator.pt on disk, domains in name order."""
    sweep = read_sweep(results_dir, select_metric=select_metric, collapse_threshold=collapse_threshold)
    winners = []
    for domain in rank_sweep(sweep.trials, sweep.selection):
        trial = domain.winner.trial if domain.winner else None
        generator = trial.file(run_files.GENERATOR) if trial else None
        if trial is not None and generator is not None:
            winners.append(DomainWinner(domain.name, trial.trial_id, generator, trial.generator, trial.random_weights,
                                        trial.file(run_files.DOMAIN)))
    return winners
