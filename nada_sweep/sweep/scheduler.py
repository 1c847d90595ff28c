"""Early stopping that compares trials only within their domain, decided per trial even when trials train in packs.

CLIP scores of different prompts live on different scales ("sketch" is easier to reach than "Neanderthal"),
so one ASHA over the whole sweep would stop every trial of the hard domains. `PerDomainASHA` keeps one of Ray's
ASHA schedulers per domain and routes each trial's evaluations to its domain's instance.

It is not Tune's scheduler: Tune can only stop a whole Tune trial, which is a pack. It runs as one Ray actor of
the sweep (`start_referee`), and each pack asks it after every evaluation of each member whether that member is
behind its domain; a member it stops leaves its pack (nada_sweep.adapt.run.StopEarly) and the pack goes on.
Trials that are not packed (packs of one) are asked the same way: one mechanism for both.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

STEP = "step"


class PerDomainASHA:
    """ASHA per domain on the `step` attribute; a member (trial) is known by its run folder."""

    def __init__(self, metric: str, mode: str, grace_steps: int, reduction_factor: float,
                 max_steps: Mapping[str, int]) -> None:
        self._metric_name = metric
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
        self._members: dict[str, SimpleNamespace] = {}  # run folder -> the stand-in trial its domain's ASHA knows

    def decide(self, member: str, domain: str, result: dict[str, Any], budget: int) -> str | None:
        """Why `member` (of `domain`, `budget` steps) should stop after the evaluation `result`; None: go on.

        An evaluation told twice (a finished trial's curve replayed by a later run) changes nothing: ASHA records
        each trial once per rung.
        """
        if result.get(self._metric_name) is None or STEP not in result:
            return None
        asha = self._by_domain[domain]
        trial = self._members.get(member)
        if trial is None:
            trial = self._members[member] = SimpleNamespace(trial_id=member)
            asha.on_trial_add(None, trial)
        decision = asha.on_trial_result(None, trial, result)
        if decision == TrialScheduler.STOP and result[STEP] < budget:
            return f"early stopping: {self._metric_name} behind the other trials of its domain"
        return None

    def debug_string(self) -> str:
        return "ASHA per domain: " + "; ".join(f"{d}: {s.debug_string()}" for d, s in self._by_domain.items())


def start_referee(metric: str, mode: str, grace_steps: int, reduction_factor: float,
                  max_steps: Mapping[str, int]) -> Any:
    """The sweep's PerDomainASHA as a Ray actor (no CPU reserved: it only compares numbers); a handle to it."""
    import ray

    return ray.remote(num_cpus=0)(PerDomainASHA).remote(metric, mode, grace_steps, reduction_factor, dict(max_steps))
