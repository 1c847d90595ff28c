"""Choosing each trial's best eval step and each domain's best trial.

A trial's best step is its eval line with the best selection metric (loss: lowest; every other metric:
highest; ties go to the later step, as the trainer picks the weights it keeps). A trial whose diversity_ratio
at that step is below the collapse threshold is `collapsed`: it only wins its domain when every evaluated
trial of the domain collapsed. CLIP scores of different prompts do not compare, so trials only ever compete
within their domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nada_sweep.metric_rules import LOWER_IS_BETTER, best_entry, finite
from nada_sweep.report.results import Selection, Trial
from nada_sweep.run_files import Status

COLLAPSED = "collapsed"  # shown instead of ok for a finished trial that lost its diversity


def is_collapsed(entry: dict[str, Any] | None, threshold: float) -> bool:
    ratio = finite(entry.get("diversity_ratio")) if entry else None
    return ratio is not None and ratio < threshold


@dataclass
class Ranked:
    """A trial with its best eval line under one selection."""

    trial: Trial
    best: dict[str, Any] | None  # None: no evaluated step yet (pending, running or failed early)
    collapsed: bool
    rank: int | None = None  # 1 = the domain's winner; None when not evaluated

    @property
    def best_step(self) -> int | None:
        return self.best["step"] if self.best else None

    @property
    def display_status(self) -> str:
        """The run status, with a finished trial that collapsed shown as `collapsed`."""
        return COLLAPSED if self.collapsed and self.trial.status is Status.OK else self.trial.status

    def score(self, metric: str) -> float | None:
        return finite(self.best.get(metric)) if self.best else None


@dataclass
class DomainResult:
    name: str
    ranked: list[Ranked]  # evaluated trials best first, then the others
    all_collapsed: bool  # every evaluated trial collapsed, so the winner is a collapsed one

    @property
    def winner(self) -> Ranked | None:
        first = self.ranked[0] if self.ranked else None
        return first if first is not None and first.best is not None else None


def rank_domain(name: str, trials: list[Trial], selection: Selection) -> DomainResult:
    metric = selection.metric
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0
    entries = []
    for trial in trials:
        best = best_entry(trial.history, metric)
        entries.append(Ranked(trial, best, is_collapsed(best, selection.collapse_threshold)))

    def order(item: Ranked) -> tuple:
        score = item.score(metric)
        # Not collapsed first; within each group the better metric first; a later best step breaks ties.
        return (score is None, item.collapsed, sign * (score or 0.0), -(item.best_step or 0), item.trial.trial_id)

    entries.sort(key=order)
    evaluated = [item for item in entries if item.best is not None]
    for position, item in enumerate(evaluated, start=1):
        item.rank = position
    return DomainResult(name, entries, bool(evaluated) and all(item.collapsed for item in evaluated))


def rank_sweep(trials: list[Trial], selection: Selection) -> list[DomainResult]:
    """Every domain's ranking, domains in name order."""
    by_domain: dict[str, list[Trial]] = {}
    for trial in trials:
        by_domain.setdefault(trial.domain, []).append(trial)
    return [rank_domain(name, by_domain[name], selection) for name in sorted(by_domain)]
