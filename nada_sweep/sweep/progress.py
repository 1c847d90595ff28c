"""The terminal display of a running sweep, fed by a Tune callback in the driver.

Tune ignores custom progress reporters in recent versions; a `tune.Callback` sees every trial event in the
driver process, which is all a display needs. On a terminal it draws a live table; elsewhere (CI logs, files)
it prints one line per event.
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

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


@dataclass
class _Running:
    domain: str
    name: str
    steps: int
    started: float = field(default_factory=time.monotonic)
    step: int = 0
    value: float | None = None


def describe(trial: Trial) -> tuple[str, str]:
    spec = trial.config["trial"]
    return spec["domain"], spec["name"]


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
        self._stopping: set[str] = set()
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
        self.running[trial.trial_id] = _Running(domain, name, trial.config["trial"]["steps"])
        self.started.add(trial.config["trial"]["out_dir"])
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
        if trial.trial_id in self._stopping:
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
        self.errored[trial.config["trial"]["out_dir"]] = _error_summary(trial)
        domain, name = describe(trial)
        self._log(f"FAILED  {domain}/{name}")
        self._refresh()

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        self._refresh()

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        self.close()

    # -- driver side ----------------------------------------------------------------------------------------

    def mark_stopping(self, trial: Trial) -> None:
        """The scheduler is stopping this trial early (so its completion is not a normal finish)."""
        self._stopping.add(trial.trial_id)

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
