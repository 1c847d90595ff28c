"""What runs inside a Ray worker: one trial, from its typed spec to `run_adaptation`, reporting to Tune.

The spec travels as plain data in the Tune config (it must survive Tune's experiment state and a restore);
`TrialSpec` is its one definition, read by the trainable, the scheduler and the display alike.
"""

from __future__ import annotations

import os
import traceback
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nada_sweep.run_files import RunFolder, Status

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from nada_sweep.adapt.settings import AdaptConfig

SPEC_KEY = "trial"  # the Tune config entry holding the spec


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
    cpus: float
    gpus: float = 0  # what Ray reserves for it; > 0 means the trial must train on CUDA
    config: dict[str, Any]  # AdaptConfig, dumped as JSON data
    labels: dict[str, Any]  # written into config.json for the report
    bank: BankSpec | None = None

    def adapt_config(self) -> AdaptConfig:
        from nada_sweep.adapt.settings import AdaptConfig

        return AdaptConfig.model_validate(self.config)


def spec_of(trial: Trial) -> TrialSpec:
    """The spec of a Tune trial (driver side: scheduler, display)."""
    return TrialSpec.model_validate(trial.config[SPEC_KEY])


def _reportable(entry: dict[str, Any]) -> dict[str, Any]:
    # Tune and the schedulers want plain numbers; metrics that do not apply (None) are left out.
    return {key: value for key, value in entry.items() if isinstance(value, (int, float)) and value is not None}


def run_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: one adaptation, reporting every evaluation to Tune."""
    import torch
    from ray import tune

    from nada_sweep import devices
    from nada_sweep.adapt.run import TrainingDiverged, run_adaptation

    spec = TrialSpec.model_validate(config[SPEC_KEY])
    folder = RunFolder(spec.out_dir)
    if spec.gpus > 0:
        devices.use_expandable_segments()
    else:
        # A trial without a GPU must not touch one, whatever Ray's defaults for CUDA_VISIBLE_DEVICES.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    torch.set_num_threads(max(1, int(spec.cpus)))

    state = folder.state()
    if state.done:
        for entry in folder.history():  # replayed so Tune, ASHA and the display see the finished curve
            tune.report(_reportable(entry))
        return
    if state is Status.DIVERGED:
        raise TrainingDiverged((folder.status() or {}).get("error") or "the loss became NaN or infinite")

    adapt = spec.adapt_config()
    try:
        if spec.gpus > 0:
            devices.claim_gpu_share(spec.gpus)  # refuses to train on the CPU while holding a GPU
        run_adaptation(adapt, folder.root, on_eval=lambda entry: tune.report(_reportable(entry)),
                       labels=spec.labels, frozen_side=_frozen_side(spec, adapt))
    except BaseException as error:
        if isinstance(error, Exception) and not folder.state().failed:  # the trainer records its own
            folder.update_status(Status.FAILED, f"{type(error).__name__}: {error}")
        # The traceback's frames hold the run's models and optimiser; a reused worker must not keep them.
        traceback.clear_frames(error.__traceback__)
        raise
    finally:
        devices.release_gpu_memory()


def _frozen_side(spec: TrialSpec, adapt: AdaptConfig) -> Any:
    """The shared frozen bank for this trial; none (live frozen side every step) for faithful runs."""
    from nada_sweep.adapt.bank import bank_frozen_side

    return bank_frozen_side(spec.bank.dir, spec.bank.entries) if spec.bank and not adapt.faithful else None
