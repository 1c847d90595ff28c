"""Early stopping that compares trials only within their domain.

CLIP scores of different prompts live on different scales ("sketch" is easier to reach than "Neanderthal"),
so one ASHA over the whole sweep would stop every trial of the hard domains. This scheduler keeps one ASHA per
domain and routes each trial's events to its domain's instance.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler

from nada_sweep.sweep.trainable import spec_of

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

STEP = "step"


def trial_domain(trial: Trial) -> str:
    return spec_of(trial).domain


class PerDomainASHA(FIFOScheduler):
    """ASHA per domain on the `step` attribute; trials run in submission order (FIFO) as usual.

    `on_stop(trial, result)` is called for each trial stopped early, just before Tune stops it.
    """

    def __init__(
        self,
        metric: str,
        mode: str,
        grace_steps: int,
        reduction_factor: float,
        max_steps: Mapping[str, int],
        on_stop: Callable[[Trial, dict[str, Any]], None],
    ) -> None:
        super().__init__()
        self._metric_name = metric
        self._on_stop = on_stop
        self._by_domain = {
            domain: AsyncHyperBandScheduler(
                time_attr=STEP,
                metric=metric,
                mode=mode,
                max_t=steps,
                grace_period=min(grace_steps, steps),
                reduction_factor=reduction_factor,
                brackets=1,
                stop_last_trials=False,  # a trial that reached its budget finishes on its own
            )
            for domain, steps in max_steps.items()
        }
        self._active: set[str] = set()  # trials ASHA knows and has not settled; it fails on any other

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        # Metric and mode are fixed per domain at construction; Tune's experiment-wide ones do not apply.
        return True

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        self._by_domain[trial_domain(trial)].on_trial_add(tune_controller, trial)
        self._active.add(trial.trial_id)

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> str:
        if result.get(self._metric_name) is None or STEP not in result:
            return TrialScheduler.CONTINUE
        decision = self._by_domain[trial_domain(trial)].on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and result[STEP] < spec_of(trial).steps:
            self._on_stop(trial, result)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Trial, result: dict[str, Any]) -> None:
        if trial.trial_id in self._active:
            self._active.discard(trial.trial_id)
            self._by_domain[trial_domain(trial)].on_trial_complete(tune_controller, trial, result or {})

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        if trial.trial_id in self._active:
            self._active.discard(trial.trial_id)
            self._by_domain[trial_domain(trial)].on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "ASHA per domain: " + "; ".join(f"{d}: {s.debug_string()}" for d, s in self._by_domain.items())
