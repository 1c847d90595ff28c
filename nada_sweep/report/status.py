"""`nada-sweep status RESULTS_DIR`: where a sweep stands, read from its results folder alone.

It needs nothing but the folder, so it works while `run` is going, from another terminal, or on another node
that mounts the same shared folder: trials finished, running and failed per domain, each running trial's step
and latest metric, each domain's best trial so far, and an ETA from the step rates the trials measured (their
metrics.jsonl records the training time of every evaluation). `--watch` redraws it until Ctrl+C.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nada_sweep.metric_rules import finite
from nada_sweep.report.leaderboard import format_value
from nada_sweep.report.results import Trial, read_sweep
from nada_sweep.report.selection import rank_sweep
from nada_sweep.run_files import Status, SweepFolder, lock_holder


@dataclass
class RunningTrial:
    domain: str
    trial: str
    step: int
    steps: int | None
    value: float | None  # the selection metric at its latest evaluation
    rate: float | None  # training steps per second, as measured so far


@dataclass
class DomainLine:
    name: str
    planned: int
    done: int = 0  # ok or stopped early
    running: int = 0
    failed: int = 0  # failed or diverged
    best_trial: str | None = None
    best_value: float | None = None

    @property
    def waiting(self) -> int:
        return max(self.planned - self.done - self.running - self.failed, 0)


@dataclass
class SweepStatus:
    name: str
    metric: str
    holder: str | None  # pid of the `run` using the folder, None when no run is
    domains: list[DomainLine] = field(default_factory=list)
    running: list[RunningTrial] = field(default_factory=list)
    eta_s: float | None = None  # until every trial is finished, at the measured rates of the running ones
    demo_label: str | None = None

    def count(self, what: str) -> int:
        return sum(getattr(line, what) for line in self.domains)


def _rate(trial: Trial) -> float | None:
    """Training steps per second, from the trial's latest evaluation (its cumulative training time)."""
    if not trial.history:
        return None
    step, elapsed = trial.history[-1]["step"], finite(trial.history[-1].get("elapsed_s"))
    return step / elapsed if elapsed else None


def _steps(trial: Trial) -> int | None:
    steps = trial.setting("steps")
    return steps if isinstance(steps, int) else None


def sweep_status(results_dir: Path | str) -> SweepStatus:
    """The sweep's state as its folder records it now. Raises UserError for a folder that is no sweep's."""
    sweep = read_sweep(results_dir)
    metric = sweep.selection.metric
    holder = lock_holder(SweepFolder(sweep.root).lock)
    status = SweepStatus(sweep.name, metric, holder, demo_label=sweep.demo_label)
    lines = {name: DomainLine(name, count) for name, count in sweep.planned.items()}
    for domain in rank_sweep(sweep.trials, sweep.selection):
        line = lines.setdefault(domain.name, DomainLine(domain.name, 0))
        line.planned = max(line.planned, len(domain.ranked))
        if domain.winner is not None:
            line.best_trial, line.best_value = domain.winner.trial.trial_id, domain.winner.score(metric)
        for item in domain.ranked:
            trial = item.trial
            if trial.status.done:
                line.done += 1
            elif trial.status.failed:
                line.failed += 1
            elif trial.status is Status.RUNNING:
                line.running += 1
                value = finite(trial.history[-1].get(metric)) if trial.history else None
                status.running.append(RunningTrial(domain.name, trial.trial_id, trial.steps_done, _steps(trial),
                                                   value, _rate(trial)))
    status.domains = [lines[name] for name in sorted(lines)]
    status.eta_s = _eta(sweep.trials, status)
    return status


def _eta(trials: list[Trial], status: SweepStatus) -> float | None:
    """Steps left (trials not started yet count the mean steps of those known) over the running trials' rate."""
    rate = sum(trial.rate for trial in status.running if trial.rate)
    if not rate or status.holder is None:
        return None
    known = [steps for steps in map(_steps, trials) if steps]
    mean = sum(known) / len(known) if known else 0
    left = sum(max((_steps(t) or mean) - t.steps_done, 0) for t in trials if not (t.status.done or t.status.failed))
    not_started = max(status.count("planned") - len(trials), 0)
    return (left + not_started * mean) / rate


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def render(status: SweepStatus) -> Group:
    """The status as rich renderables: a headline, a table per domain, a table of running trials."""
    finished = status.count("done") + status.count("failed")
    parts = [f"{finished}/{status.count('planned')} trials finished", f"{status.count('running')} running",
             f"{status.count('failed')} failed"]
    if status.holder is None:
        parts.append("no `nada-sweep run` is using this folder")
    else:
        parts.append(f"run in progress (pid {status.holder})")
        parts.append(f"ETA {_duration(status.eta_s)}" if status.eta_s is not None else "ETA: not measured yet")
    header = Text.assemble((status.name, "bold"), "  ", "  ·  ".join(parts))
    domains = Table(box=None, pad_edge=False, header_style="dim")
    for column in ("domain", "done", "running", "failed", "to run", "best so far", status.metric):
        domains.add_column(column, justify="left" if column in ("domain", "best so far") else "right")
    for line in status.domains:
        domains.add_row(Text(line.name), str(line.done), str(line.running), str(line.failed), str(line.waiting),
                        Text(line.best_trial or "-"), format_value(line.best_value) or "-")
    shown: list = [header, domains]
    if status.running:
        running = Table(title="running" if status.holder else "marked running, but no run holds the folder "
                        "(interrupted: `run` again continues them)", title_justify="left", box=None,
                        pad_edge=False, header_style="dim")
        for column in ("domain", "trial", "step", status.metric, "steps/s", "left"):
            running.add_column(column, justify="left" if column in ("domain", "trial") else "right")
        for trial in sorted(status.running, key=lambda t: (t.domain, t.trial)):
            left = (trial.steps - trial.step) / trial.rate if trial.rate and trial.steps else None
            running.add_row(Text(trial.domain), Text(trial.trial), f"{trial.step}/{trial.steps or '?'}",
                            format_value(trial.value) or "-", f"{trial.rate:.2f}" if trial.rate else "-",
                            _duration(left) if left is not None else "-")
        shown.append(running)
    if status.demo_label:
        shown.append(Text(status.demo_label, style="yellow"))
    return Group(*shown)


def status_command(results_dir: Path | str, *, watch: bool = False, interval: float = 2.0,
                   console: Console | None = None) -> int:
    """Print the status once, or with `watch` redraw it every `interval` seconds until Ctrl+C."""
    console = console or Console()
    if not watch:
        console.print(render(sweep_status(results_dir)))
        return 0
    try:
        with Live(render(sweep_status(results_dir)), console=console, refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(render(sweep_status(results_dir)))
    except KeyboardInterrupt:  # the way to leave --watch: not an interruption of anything
        return 0
