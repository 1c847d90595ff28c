"""The gallery rebuilt while a sweep runs, every `report_every` finished trials, so it can be watched in a browser.

A Tune callback in the driver counts finished trials and rebuilds the report in a background thread (the
tuning loop must not wait for thumbnails and plots). A rebuild that falls due while one is running, or sooner
than QUIET_FACTOR times the last one's duration after it began, waits for the next finished trial: the rebuilds
never take more than about 1/QUIET_FACTOR of the machine from the trials (a 20-domain demo's report takes
seconds to build; its trials take seconds too). Every page is written atomically, so a browser never loads half
a page; the final report at the end of `run` replaces the last live one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

QUIET_FACTOR = 10.0


class LiveReport(Callback):
    """Rebuilds the report of results folder `root` every `every` finished trials (0: never)."""

    def __init__(self, root: Path, every: int) -> None:
        self.root = root
        self.every = every
        self.finished = 0
        self.builds = 0  # rebuilds done
        self._due = False
        self._quiet_until = 0.0  # time.monotonic() before which no rebuild starts
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks with the experiment state; a thread and a lock stay behind.
        return {key: value for key, value in self.__dict__.items() if key not in ("_thread", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _thread=None, _lock=threading.Lock())

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._count()

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._count()

    def close(self) -> None:
        """Wait for a rebuild in progress (the final report must not race it)."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _count(self) -> None:
        self.finished += 1
        if self.every and self.finished % self.every == 0:
            self._due = True
        with self._lock:
            busy = self._thread is not None and self._thread.is_alive()
            if not self._due or busy or time.monotonic() < self._quiet_until:
                return
            self._due = False
            self._thread = threading.Thread(target=self._build, name="live-report", daemon=True)
            self._thread.start()

    def _build(self) -> None:
        from nada_sweep.report import build_report

        started = time.monotonic()
        try:
            build_report(self.root, running=True)
            self.builds += 1
        except Exception:  # noqa: BLE001 -- the last good page stays; the final report says what is wrong
            pass
        with self._lock:
            self._quiet_until = started + QUIET_FACTOR * (time.monotonic() - started)
