"""What runs inside a Ray worker: one pack of trials (a single trial is a pack of one), from typed specs to
`run_adaptation` (one member) or `train_pack` (several), reporting each member's evaluations to Tune.

The specs travel as plain data in the Tune config (they must survive Tune's experiment state and a restore);
`TrialSpec` (one trial) and `PackSpec` (one Tune trial: its members and resources) are their one definition,
read by the trainable, the driver and the display alike. Every report carries MEMBER, the member's place in its
pack; a member that leaves its pack reports MEMBER_ENDED once (nada_sweep.sweep.members turns these reports into
per-trial events for the display and the trackers).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nada_sweep.run_files import RunFolder, Status

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from nada_sweep.adapt.pack import PackMember
    from nada_sweep.adapt.settings import AdaptConfig

SPEC_KEY = "trial"  # a member's TrialSpec, in the config of the stand-in trial the display sees for it
PACK_KEY = "pack"  # the Tune config entry holding a Tune trial's PackSpec
MEMBER = "member"  # in each report: the reporting member's place in its pack
MEMBER_ENDED = "member_ended"  # reported once by a member leaving its pack (its folder says how it ended)
REPLAYED = "replayed"  # in a report of an evaluation an earlier run made (read from the member's metrics.jsonl)


class BankSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dir: str  # the sweep's shared frozen bank folder
    entries: int  # steps it must cover: the most steps of any trial sharing it


class TrialSpec(BaseModel):
    """Everything one trial needs, as plain data."""

    model_config = ConfigDict(extra="forbid")

    index: int  # position in the sweep's trial list
    domain: str
    name: str
    out_dir: str  # the trial's run folder
    steps: int
    config: dict[str, Any]  # AdaptConfig, dumped as JSON data
    labels: dict[str, Any]  # written into config.json for the report
    bank: BankSpec | None = None

    def adapt_config(self) -> AdaptConfig:
        from nada_sweep.adapt.settings import AdaptConfig

        return AdaptConfig.model_validate(self.config)


class PackSpec(BaseModel):
    """One Tune trial: the trials one worker trains together, and what it reserves for them."""

    model_config = ConfigDict(extra="forbid")

    index: int  # position in the sweep's pack list (Tune's trial folders are named by it)
    members: list[TrialSpec]
    cpus: float
    gpus: float = 0  # > 0 means the pack must train on CUDA


def spec_of(trial: Trial) -> TrialSpec:
    """The spec of a trial as the display sees it (a pack member's stand-in, nada_sweep.sweep.members)."""
    return TrialSpec.model_validate(trial.config[SPEC_KEY])


def pack_of(trial: Trial) -> PackSpec:
    """The spec of a Tune trial (driver side)."""
    return PackSpec.model_validate(trial.config[PACK_KEY])


def _reportable(entry: dict[str, Any]) -> dict[str, Any]:
    # Tune and the schedulers want plain numbers; metrics that do not apply (None) are left out.
    return {key: value for key, value in entry.items() if isinstance(value, (int, float)) and value is not None}


def run_pack(config: dict[str, Any], referee: Any = None) -> None:
    """The Tune trainable: replay the evaluations each member's folder holds (REPLAYED; all of a finished
    member's, the kept part of an interrupted one's), train the unfinished members, report every evaluation. `referee`: the early-stopping actor (nada_sweep.sweep.scheduler.PerDomainASHA), None when off.

    Raises, once every member has ended, when a member failed or diverged, so that Tune retries the pack (its
    finished members are then only replayed) or records it failed.
    """
    import torch

    from nada_sweep import devices

    pack = PackSpec.model_validate(config[PACK_KEY])
    if pack.gpus > 0:
        devices.use_expandable_segments()
    else:
        # A pack without a GPU must not touch one, whatever Ray's defaults for CUDA_VISIBLE_DEVICES.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(max(1, int(pack.cpus)))

    members = []
    for position, spec in enumerate(pack.members):
        on_eval, on_end = _member_hooks(position, spec, referee)
        folder = RunFolder(spec.out_dir)
        # Replayed so that Tune, the display, early stopping and a searcher see the whole curve: a finished
        # member's, and the part an interrupted member's checkpoint holds (interrupted after its last
        # evaluation, it has nothing left to report but this).
        for entry in folder.kept_history():
            on_eval(entry, replay=True)
        if folder.state().final:
            on_end(None)
        else:
            members.append(_member(spec, on_eval, on_end))
    try:
        if pack.gpus > 0:
            devices.claim_gpu_share(pack.gpus)  # refuses to train on the CPU while holding a GPU
        errors = _train(members)
    except BaseException as error:
        if isinstance(error, Exception):  # e.g. no usable GPU: every member that was to train records it
            for member in members:
                folder = RunFolder(member.out_dir)
                if not (folder.state().failed or folder.state().done):
                    folder.update_status(Status.FAILED, f"{type(error).__name__}: {error}")
        # The traceback's frames hold the pack's models and optimisers; a reused worker must not keep them.
        traceback.clear_frames(error.__traceback__)
        raise
    finally:
        devices.release_gpu_memory()
    _raise_for_failed_members(pack, errors)


def _member(spec: TrialSpec, on_eval: Callable, on_end: Callable) -> PackMember:
    from nada_sweep.adapt.bank import bank_frozen_side
    from nada_sweep.adapt.pack import PackMember

    adapt = spec.adapt_config()
    # The shared frozen bank; none (the live frozen side every step) for faithful runs.
    frozen = bank_frozen_side(spec.bank.dir, spec.bank.entries) if spec.bank and not adapt.faithful else None
    return PackMember(adapt, spec.out_dir, labels=spec.labels, on_eval=on_eval, frozen_side=frozen, on_end=on_end)


def _member_hooks(position: int, spec: TrialSpec, referee: Any) -> tuple[Callable, Callable]:
    """The member's on_eval (report to Tune, then ask the referee whether to stop early) and on_end."""
    import ray
    from ray import tune

    from nada_sweep.adapt.run import StopEarly

    def on_eval(entry: dict[str, Any], replay: bool = False) -> None:
        result = {**_reportable(entry), MEMBER: position, **({REPLAYED: 1} if replay else {})}
        tune.report(result)
        if referee is not None:
            reason = ray.get(referee.decide.remote(spec.out_dir, spec.domain, result, spec.steps))
            if reason and not replay:
                raise StopEarly(reason)  # the run records itself as stopped and leaves its pack

    def on_end(result: Any) -> None:
        tune.report({MEMBER: position, MEMBER_ENDED: 1})

    return on_eval, on_end


def _train(members: list[PackMember]) -> list[BaseException]:
    """Train `members` (one alone, exactly as before packs; several as one pack); the errors that ended some,
    each also in its member's folder."""
    from nada_sweep.adapt.pack import train_pack
    from nada_sweep.adapt.run import run_adaptation

    if len(members) != 1:
        results = train_pack(members) if members else []
    else:
        (member,) = members
        try:
            results = [run_adaptation(member.config, member.out_dir, on_eval=member.on_eval, labels=member.labels,
                                      frozen_side=member.frozen_side)]
        except Exception as error:  # the pack raises it once it has ended
            results = [error]
        member.on_end(results[0])
    errors = []
    for member, result in zip(members, results, strict=True):
        if isinstance(result, BaseException):
            errors.append(result)
            folder = RunFolder(member.out_dir)
            if not folder.state().failed:  # refused before the run could record it (e.g. its folder)
                folder.update_status(Status.FAILED, f"{type(result).__name__}: {result}")
    return errors


class MembersFailed(RuntimeError):
    """Some members of a pack failed or diverged (each folder's status.json says how); the others ended."""


def _raise_for_failed_members(pack: PackSpec, errors: list[BaseException]) -> None:
    failed = [(spec, RunFolder(spec.out_dir)) for spec in pack.members if RunFolder(spec.out_dir).state().failed]
    if not failed:
        return
    lines = "; ".join(f"{spec.domain}/{spec.name} {folder.state()}: {(folder.status() or {}).get('error')}"
                      for spec, folder in failed)
    error = MembersFailed(f"{len(failed)} of {len(pack.members)} members of the pack did not finish: {lines}")
    cause = errors[0] if errors else None
    if cause is not None:
        traceback.clear_frames(cause.__traceback__)
    raise error from cause
