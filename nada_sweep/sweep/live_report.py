"""The gallery rebuilt while a sweep runs, every `report_every` finished trials, so it can be watched in a browser.

A Tune callback in the driver counts finished trials and rebuilds the report in a background thread (the
tuning loop must not wait for thumbnails and plots); a rebuild due while one is running follows it. Every page
is written atomically, so a browser never loads half a page; the final report at the end of `run` replaces the
last live one.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class LiveReport(Callback):
    """Rebuilds the report of results folder `root` every `every` finished trials (0: never)."""

    def __init__(self, root: Path, every: int) -> None:
        self.root = root
        self.every = every
        self.finished = 0
        self.builds = 0  # rebuilds done, for the terminal's summary and the tests
        self._thread: threading.Thread | None = None
        self._again = False
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
            self._again = False
            thread = self._thread
        if thread is not None:
            thread.join()

    def _count(self) -> None:
        self.finished += 1
        if not self.every or self.finished % self.every:
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._again = True
                return
            self._thread = threading.Thread(target=self._build, name="live-report", daemon=True)
            self._thread.start()

    def _build(self) -> None:
        from nada_sweep.report import build_report

        while True:
            try:
                build_report(self.root, running=True)
                self.builds += 1
            except Exception:  # noqa: BLE001 -- the last good page stays; the final report says what is wrong
                pass
            with self._lock:
                if not self._again:
                    return
                self._again = False
