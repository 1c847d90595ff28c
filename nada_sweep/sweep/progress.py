"""What the terminal shows of a sweep: the plan table before it starts, the live display while it runs (fed
by a Tune callback in the driver), the closing summary.

Tune ignores custom progress reporters in recent versions; a `tune.Callback` sees every trial event in the
driver process, which is all a display needs. On a terminal it draws a live table; elsewhere (CI logs, files)
it prints one line per event. Its trials are the members of the packs (nada_sweep.sweep.members).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nada_sweep.devices import local_resources
from nada_sweep.run_files import RANDOM_WEIGHT_LABEL, RunFolder, Status, SweepFolder
from nada_sweep.sweep.packs import alone_reason, group_packs
from nada_sweep.sweep.plan import ResolvedSweep
from nada_sweep.sweep.trackers import describe as describe_trackers
from nada_sweep.sweep.trainable import spec_of

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

DEMO_NOTE = f"DEMO: built-in tiny models and a small step budget. {RANDOM_WEIGHT_LABEL}."


@dataclass
class TrialOutcome:
    domain: str
    name: str
    folder: Path
    status: Status
    error: str | None


@dataclass
class _Running:
    domain: str
    name: str
    steps: int
    started: float = field(default_factory=time.monotonic)
    step: int = 0
    value: float | None = None


def describe(trial: Trial) -> tuple[str, str]:
    spec = spec_of(trial)
    return spec.domain, spec.name


def _error_summary(trial: Trial) -> str | None:
    """The first line of the error Tune recorded for `trial` (e.g. "The actor died unexpectedly ..."), if any."""
    try:
        text = Path(trial.error_file).read_text() if trial.error_file else ""
    except OSError:  # Tune's error file is a courtesy; the trial's own status.json is the record
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("Failure #")]
    return lines[0][:300] if lines else None


class SweepProgress(Callback):
    """Counts of done/running/failed trials and, per running trial, its domain, step and latest metric."""

    def __init__(self, title: str, total: int, metric: str, console: Console, *, live: bool | None = None):
        self.title = title
        self.total = total
        self.metric = metric
        self.console = console
        self.done = 0
        self.failed = 0
        self.stopped = 0
        self.running: dict[str, _Running] = {}
        self.started: set[str] = set()  # out_dir of each trial started in this run
        # out_dir -> Tune's last error, of each trial that failed for good (no retry left)
        self.errored: dict[str, str | None] = {}
        self._started = time.monotonic()
        use_live = console.is_terminal if live is None else live
        self._live = Live(self._render(), console=console, refresh_per_second=2, transient=False) if use_live else None
        if self._live:
            self._live.start()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; the terminal handles stay behind.
        return {key: value for key, value in self.__dict__.items() if key not in ("console", "_live")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, console=Console(), _live=None)

    # -- Tune hooks (called in the driver's tuning loop) ----------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        domain, name = describe(trial)
        spec = spec_of(trial)
        self.running[trial.trial_id] = _Running(domain, name, spec.steps)
        self.started.add(spec.out_dir)
        self._log(f"start   {domain}/{name}")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        row = self.running.get(trial.trial_id)
        if row is None:
            return
        row.step = int(result.get("step", row.step))
        if result.get(self.metric) is not None:
            row.value = float(result[self.metric])
        self._refresh()

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        row = self.running.pop(trial.trial_id, None)
        domain, name = describe(trial)
        if RunFolder(spec_of(trial).out_dir).state() is Status.STOPPED:  # the trial recorded it itself
            self.stopped += 1
            self._log(f"stopped {domain}/{name} early at step {row.step if row else '?'} (behind its domain)")
        else:
            self.done += 1
            shown = f", {self.metric} {row.value:.4f}" if row and row.value is not None else ""
            self._log(f"done    {domain}/{name}{shown}")
        self._refresh()

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)
        domain, name = describe(trial)
        self._log(f"retry   {domain}/{name} after an error")
        self._refresh()

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self.running.pop(trial.trial_id, None)
        self.failed += 1
        self.errored[spec_of(trial).out_dir] = _error_summary(trial)
        domain, name = describe(trial)
        self._log(f"FAILED  {domain}/{name}")
        self._refresh()

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._refresh()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.close()

    # -- driver side ----------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._live:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def counts(self) -> str:
        pending = self.total - self.done - self.failed - self.stopped - len(self.running)
        parts = [f"{self.done} done", f"{len(self.running)} running", f"{self.failed} failed"]
        if self.stopped:
            parts.append(f"{self.stopped} stopped early")
        parts.append(f"{max(pending, 0)} pending")
        return f"{self.done + self.failed + self.stopped}/{self.total} trials: " + ", ".join(parts)

    def _log(self, message: str) -> None:
        if self._live is None:
            elapsed = time.monotonic() - self._started
            self.console.print(Text(f"[{elapsed:5.0f}s] {message}  ({self.counts()})"), soft_wrap=True)

    def _refresh(self) -> None:
        if self._live:
            self._live.update(self._render())

    def _render(self) -> Group:
        header = Text.assemble((self.title, "bold"), "  ", self.counts())
        if not self.running:
            return Group(header)
        table = Table(box=None, pad_edge=False, header_style="dim")
        for column in ("domain", "trial", "step", self.metric, "time"):
            table.add_column(column, justify="right" if column in ("step", "time", self.metric) else "left")
        for row in sorted(self.running.values(), key=lambda r: r.started):
            value = f"{row.value:.4f}" if row.value is not None else "-"
            table.add_row(row.domain, row.name, f"{row.step}/{row.steps}", value,
                          f"{time.monotonic() - row.started:.0f}s")
        return Group(header, table)


def print_plan(sweep: ResolvedSweep, console: Console) -> None:
    """The expanded trials: per domain its prompt and trials, then the totals and resources."""
    config = sweep.config
    title = f"sweep {sweep.name}" + ("  [DEMO: tiny random-weight models]" if sweep.demo else "")
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("domain")
    table.add_column("source -> target")
    table.add_column("steps", justify="right")
    table.add_column("trials")
    existing = _done_counts(sweep)
    if existing:
        table.add_column("done", justify="right")
    # An adaptive search's trials are not known before it runs: its bounds stand in for the steps column.
    trials = sweep.probe_trials() if sweep.adaptive else sweep.trials
    # As a run started here splits them (a run on another cluster splits them for that cluster's size).
    packs = group_packs([sweep.adapt_config(trial) for trial in sweep.trials],
                        [trial.domain for trial in sweep.trials], sweep.pack_size,
                        sweep.packs_at_once(*local_resources()))
    pack_of = {index: number for number, members in enumerate(packs) if len(members) > 1 for index in members}
    by_domain: dict[str, list[str]] = {}
    for index, trial in enumerate(sweep.trials):
        # each trial's lr: searched, given, or its parametrization's (lr_by_params); its pack when it has one
        shown = f"{trial.name} (lr {sweep.adapt_config(trial).lr:g}"
        shown += f", pack {pack_of[index]})" if index in pack_of else ")"
        by_domain.setdefault(trial.domain, []).append(shown)
    for domain in sweep.domains:
        target = domain.target if domain.target is not None else f"images in {domain.target_images}"
        steps = sorted({sweep.adapt_config(t).steps for t in trials if t.domain == domain.name})
        names = by_domain.get(domain.name, [])
        row = [
            Text(domain.name),
            Text(f"{domain.source} -> {target}"),
            "/".join(map(str, steps)),
            Text(", ".join(names) if names else f"{config.num_samples} chosen by {config.search_alg}"),
        ]
        if existing:
            row.append(f"{existing.get(domain.name, 0)}/{len(names) or config.num_samples}")
        table.add_row(*row)
    console.print(table)
    say(console, Text(_search_line(sweep)))
    say(console, Text(_packs_line(sweep, packs)))
    gpus = config.resources.gpus
    say(console, Text(
        f"each pack: {config.resources.cpus:g} CPU, {gpus:g} GPU" + ("" if gpus else " (runs on CPU)")
        + (f"; at most {config.max_concurrent} at once" if config.max_concurrent else "")
        + (f"; retries {config.retries}" if config.retries else "")
        + ("; early stopping per domain (ASHA on "
           f"{config.early_stopping.metric or config.select_metric})" if config.early_stopping else "")
    ))
    clip = ", ".join(f"{spec.name} x{spec.weight:g}" for spec in sweep.clip)
    say(console, Text(f"generator {sweep.generator} ({sweep.generator_size} px, n_latent {sweep.n_latent}); "
                       f"CLIP {clip}; metrics by {sweep.eval_clip or sweep.clip[0].name}"))
    say(console, Text(f"results: {sweep.results_root}"
                      + (f"; gallery rebuilt every {config.report_every} finished trials" if config.report_every
                         else "")))
    for line in describe_trackers(sweep):
        say(console, Text(f"tracking: {line}"))
    for warning in _missing_clip_files(sweep):
        say(console, Text(warning, style="yellow"))
    if sweep.demo:
        say(console, Text(DEMO_NOTE, style="yellow"))


def _search_line(sweep: ResolvedSweep) -> str:
    """How the trials come about: the grid multiplied out, random draws, or a searcher per domain."""
    config, domains = sweep.config, len(sweep.domains)
    searched = "; ".join(f"{dim.field}: {dim.describe()}" for dim in sweep.search) or "nothing searched"
    if sweep.adaptive:
        return (f"{sweep.trial_total} trials = {domains} domains x {config.num_samples}, chosen by {config.search_alg}"
                f" (TPE), one searcher per domain learning only from its own trials ({searched}); the first "
                f"{sweep.search_startup} of each domain at random")
    if config.search_alg == "random":
        return f"{sweep.trial_total} trials = {domains} domains x {config.num_samples} random draws ({searched})"
    repeats = f" x {config.num_samples} repeats" if config.num_samples > 1 else ""
    return f"{sweep.trial_total} trials = {domains} domains x {sweep.trial_total // domains} ({searched}){repeats}"


def _packs_line(sweep: ResolvedSweep, packs: list[list[int]]) -> str:
    """How the trials are packed: packs of several trials (numbered as in the table), trials alone and why."""
    if sweep.adaptive:
        return f"packs: none, every trial trains alone ({sweep.config.search_alg} suggests one trial at a time)"
    size = sweep.pack_size
    if size == 1:
        return "packs: none, every trial trains alone (pack: 1)"
    together = [members for members in packs if len(members) > 1]
    alone = [members[0] for members in packs if len(members) == 1]
    line = (f"packs: {len(packs)} for {len(sweep.trials)} trials, at most {size} trials each; "
            f"{sum(map(len, together))} trials in {len(together)} pack{'s' * (len(together) != 1)} trained together")
    reasons = {reason for index in alone if (reason := alone_reason(sweep.adapt_config(sweep.trials[index])))}
    if alone:
        line += f", {len(alone)} alone" + (f" ({'; '.join(sorted(reasons))})" if reasons else "")
    return line


def _missing_clip_files(sweep: ResolvedSweep) -> list[str]:
    """Named CLIP models whose weights this machine lacks (trials never download; workers elsewhere may have them)."""
    from nada_sweep.models.clip_models import CLIP_URLS, clip_cache_path

    return [
        f"note: {name} is not downloaded on this machine ({clip_cache_path(name)} is missing); `run` downloads "
        "it before starting trials (unless --offline)"
        for name in sweep.clip_names()
        if name in CLIP_URLS and not clip_cache_path(name).is_file()
    ]


def say(console: Console, text: Text) -> None:
    # Long lines (paths, errors) stay whole in logs instead of wrapping at the console width.
    console.print(text, soft_wrap=True)


def _done_counts(sweep: ResolvedSweep) -> dict[str, int]:
    """Finished trials per domain, when a results folder already exists (a rerun continues it)."""
    counts: dict[str, int] = {}
    if not sweep.results_root.is_dir():
        return counts
    if sweep.adaptive:  # the trials a searcher suggested are the folders it left
        trials = SweepFolder(sweep.results_root).trials
        folders = [(d.name, path) for d in sweep.domains for path in (trials / d.name).glob("*")]
    else:
        folders = [(trial.domain, sweep.trial_dir(trial)) for trial in sweep.trials]
    for domain, folder in folders:
        if RunFolder(folder).state().done:
            counts[domain] = counts.get(domain, 0) + 1
    return counts


def print_summary(sweep: ResolvedSweep, outcomes: list[TrialOutcome], elapsed: float, report_index: Path | None,
                  console: Console) -> None:
    """The closing summary: counts, failures with their errors, where everything is."""
    failed = [o for o in outcomes if o.status.failed]
    unfinished = [o for o in outcomes if not (o.status.done or o.status.failed)]
    succeeded = len(outcomes) - len(failed) - len(unfinished)
    say(console, Text(f"{succeeded}/{len(outcomes)} trials succeeded, {len(failed)} failed, {len(unfinished)} "
                      f"unfinished ({elapsed:.0f}s)", style="bold"))
    for outcome in failed:
        error = (outcome.error or "no error recorded").strip().splitlines()[0][:300]
        say(console, Text(f"  {outcome.status}: {outcome.domain}/{outcome.name}: {error}", style="red"))
    if failed:
        say(console, Text(f"  (details in each trial's status.json under {sweep.results_root / 'trials'}; "
                          "running the same command again retries failed trials)"))
    say(console, Text(f"results: {sweep.results_root}"))
    if report_index:
        say(console, Text(f"report: {report_index}"))
    if sweep.demo:
        say(console, Text(DEMO_NOTE, style="yellow"))
    if unfinished:
        say(console, Text(f"{len(unfinished)} trials did not finish (interrupted); run the same command again to "
                          "continue them -- finished trials are not rerun", style="yellow"))
