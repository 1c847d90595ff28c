"""Static PNG plots of one domain (matplotlib, no display needed): the k sweep and quality vs diversity.

No user text goes into a plot: matplotlib would read `$...$` in a prompt as math and may fail on it; the
HTML page around the plot names the domain instead.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nada_sweep.metric_rules import finite, is_better
from nada_sweep.report.selection import DomainResult
from nada_sweep.run_files import atomic_write


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))


def k_sweep_lines(domain: DomainResult, metric: str) -> dict[str, list[tuple[float, float]]]:
    """The k-sweep plot's lines: label -> (k, best select metric) points, one line per parametrization and lr.

    The label names the parametrization only when the domain's trials used several (its names are our own
    fixed words, never user text).
    """
    lines: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for item in domain.ranked:
        k, lr, score = finite(item.trial.setting("k")), finite(item.trial.setting("lr")), item.score(metric)
        if k is not None and lr is not None and score is not None:
            # "$" would start matplotlib's math mode; a hand-edited config.json may hold anything
            lines.setdefault((item.trial.mode.replace("$", ""), lr), []).append((k, score))
    several = len({mode for mode, _ in lines}) > 1
    return {(f"{mode} lr {lr:g}" if several else f"lr {lr:g}"): _best_per_x(lines[mode, lr], metric)
            for mode, lr in sorted(lines)}


def k_sweep(domain: DomainResult, metric: str, path: Path) -> bool:
    """Select metric at each trial's best step against k (see k_sweep_lines); False when nothing to plot."""
    lines = k_sweep_lines(domain, metric)
    if not lines:
        return False
    figure = Figure(figsize=(5.5, 3.6))
    axes = figure.subplots()
    for label, points in lines.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("k (trained w indices; 0 = default layers)")
    axes.set_ylabel(f"{metric} at best step")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    _save(figure, path)
    return True


def _best_per_x(points: list[tuple[float, float]], metric: str) -> list[tuple[float, float]]:
    # Several trials may share (k, lr) when other settings are searched too; the line follows the best.
    best: dict[float, float] = {}
    for x, y in points:
        if is_better(metric, y, best.get(x)):
            best[x] = y
    return sorted(best.items())


def quality_vs_diversity(domain: DomainResult, threshold: float, path: Path) -> bool:
    """Each evaluated trial at its best step: diversity_ratio (x) against CLIP quality (y)."""
    quality = "clip_quality"
    if all(item.score(quality) is None for item in domain.ranked):
        quality = "clip_direction"  # image-guided targets have no target text to score quality against
    points = [(item.score("diversity_ratio"), item.score(quality), item) for item in domain.ranked]
    points = [(x, y, item) for x, y, item in points if x is not None and y is not None]
    if not points:
        return False
    figure = Figure(figsize=(5.5, 3.6))
    axes = figure.subplots()
    winner = domain.winner
    others = [(x, y) for x, y, item in points if item is not winner]
    if others:
        axes.scatter([p[0] for p in others], [p[1] for p in others], label="trials", alpha=0.8)
    for x, y, item in points:
        if item is winner:
            axes.scatter([x], [y], marker="*", s=220, color="tab:red", label="selected", zorder=3)
    if threshold > 0:
        axes.axvline(threshold, color="gray", linestyle="--", linewidth=1, label="collapse threshold")
    axes.set_xlabel("diversity_ratio (adapted / source diversity)")
    axes.set_ylabel(f"{quality} at best step")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    _save(figure, path)
    return True
