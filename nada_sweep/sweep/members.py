"""The members of packs as the display, the live gallery and the trackers see trials: one stand-in per member.

A Tune trial of the sweep trains a pack (nada_sweep.sweep.trainable); `MemberEvents` is the Tune callback that
holds the sweep's own callbacks and turns each pack trial's events into events of its members: a member starts
with its pack, gets the results it reported (MEMBER), completes when it reports MEMBER_ENDED as finished or
stopped early, and is retried or failed with its pack when it ended failed (a pack raises once every member has
ended, so that Tune retries it). The callbacks therefore see each member exactly as they saw a trial before
packs, and a pack of one exactly as that one trial.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from nada_sweep.run_files import RunFolder
from nada_sweep.sweep.trainable import MEMBER, MEMBER_ENDED, SPEC_KEY, TrialSpec, pack_of

if TYPE_CHECKING:
    from ray.tune.experiment import Trial


class MemberTrial:
    """A pack member standing in for a Tune trial: its own id and config (its TrialSpec under SPEC_KEY);
    everything else (error file, paths, experiment) is its pack's Tune trial's."""

    def __init__(self, pack: Trial, position: int, spec: TrialSpec) -> None:
        self.pack = pack
        self.trial_id = f"{pack.trial_id}.{position}"
        self.config = {SPEC_KEY: spec.model_dump(mode="json")}
        self.out_dir = spec.out_dir

    def __getattr__(self, name: str) -> Any:
        if name == "pack":  # not set yet (unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.pack, name)

    def __repr__(self) -> str:
        return f"MemberTrial({self.out_dir})"


class MemberEvents(Callback):
    """Forwards Tune's events to `callbacks`, per pack member. `retried`: whether Tune may retry a failed pack
    (then a member that failed is settled with its pack; otherwise at once)."""

    def __init__(self, callbacks: list[Callback], retried: bool) -> None:
        self.callbacks = callbacks
        self.retried = retried
        self._members: dict[str, list[MemberTrial]] = {}  # Tune trial id -> its members' stand-ins
        self._settled: set[str] = set()  # members whose end the callbacks were told; a retried pack replays them

    # -- events that concern no trial --------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        for callback in self.callbacks:
            callback.setup(**info)

    def on_step_begin(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        for callback in self.callbacks:
            callback.on_step_begin(iteration, trials, **info)

    def on_step_end(self, iteration: int, trials: list[Trial], **info: Any) -> None:
        for callback in self.callbacks:
            callback.on_step_end(iteration, trials, **info)

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for callback in self.callbacks:
            callback.on_experiment_end(trials, **info)

    # -- a pack's events, as its members' -----------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for member in self._unsettled(trial):
            self._tell("on_trial_start", iteration, trials, member, **info)

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        if MEMBER not in result:
            return
        member = self._stand_ins(trial)[int(result[MEMBER])]
        if member.trial_id in self._settled:
            return
        if not result.get(MEMBER_ENDED):
            self._tell("on_trial_result", iteration, trials, member, result=result, **info)
        elif not RunFolder(member.out_dir).state().failed:
            self._settle("on_trial_complete", iteration, trials, member, **info)
        elif not self.retried:
            self._settle("on_trial_error", iteration, trials, member, **info)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for member in self._unsettled(trial):
            self._settle("on_trial_complete", iteration, trials, member, **info)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for member in self._unsettled(trial):
            self._settle("on_trial_error", iteration, trials, member, **info)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        for member in self._unsettled(trial):
            self._tell("on_trial_recover", iteration, trials, member, **info)

    # -- inside ------------------------------------------------------------------------------------------------

    def _stand_ins(self, trial: Trial) -> list[MemberTrial]:
        if trial.trial_id not in self._members:
            self._members[trial.trial_id] = [MemberTrial(trial, position, spec)
                                             for position, spec in enumerate(pack_of(trial).members)]
        return self._members[trial.trial_id]

    def _unsettled(self, trial: Trial) -> list[MemberTrial]:
        return [member for member in self._stand_ins(trial) if member.trial_id not in self._settled]

    def _settle(self, event: str, iteration: int, trials: list[Trial], member: MemberTrial, **info: Any) -> None:
        self._settled.add(member.trial_id)
        self._tell(event, iteration, trials, member, **info)

    def _tell(self, event: str, iteration: int, trials: list[Trial], member: MemberTrial, **info: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(iteration=iteration, trials=trials, trial=member, **info)
