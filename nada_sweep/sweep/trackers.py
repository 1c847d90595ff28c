"""Experiment trackers fed while a sweep runs: TensorBoard, Weights & Biases, MLflow.

Each is one of Ray Tune's own logger callbacks (in the driver, logging what the trials report to Tune), fitted
to a sweep: one tracker run per trial, named as its folder (domain/trial); steps counted in training steps; the
sample grid of each evaluation logged as an image beside the metrics; a trial that a later `run` continues
logged into the same tracker run; and a trial that had finished before this run (its metrics are only replayed
to Tune) not logged again. After the report, `log_leaderboard` adds the leaderboard to each as a table.

The sample grids are read from the trial folders, which the driver reads anyway (the report is built from them).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION

from nada_sweep.metric_rules import SELECTABLE
from nada_sweep.run_files import RunFolder, sample_name
from nada_sweep.sweep.plan import ResolvedSweep
from nada_sweep.sweep.trainable import REPLAYED, TrialSpec, spec_of

if TYPE_CHECKING:
    from ray.tune import Callback
    from ray.tune.experiment import Trial

TENSORBOARD = "tensorboard"  # folder in the results folder
WANDB_DIR = "wandb"  # W&B's own folder name, made by it inside the results folder
LEADERBOARD = "leaderboard"  # the name of each tracker's leaderboard run
TRIAL_TAG = "nada_sweep.trial"  # MLflow tag naming the trial folder a run belongs to
_LOGGED = (*SELECTABLE, "elapsed_s")  # what of a trial's report the trackers log


def run_name(spec: TrialSpec) -> str:
    return f"{spec.domain}/{spec.name}"


class _ReplayedTrials:
    """The trials this run only replays to Tune (finished in an earlier run, which logged them): not logged again."""

    def __init__(self) -> None:
        self._ids: set[str] = set()

    def started(self, trial: Trial) -> TrialSpec | None:
        """At a trial's start: its spec when it trains in this run, None when its folder holds a finished run."""
        spec = spec_of(trial)
        if RunFolder(spec.out_dir).state().done:
            self._ids.add(trial.trial_id)
            return None
        return spec

    def __contains__(self, trial: Trial) -> bool:
        return trial.trial_id in self._ids

    def skips(self, trial: Trial, result: dict[str, Any]) -> bool:
        """Whether `result` is not logged: it is no evaluation, or one an earlier run made and logged."""
        return trial in self or "step" not in result or bool(result.get(REPLAYED))


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    return {key: float(result[key]) for key in _LOGGED if isinstance(result.get(key), (int, float))}


def _params(spec: TrialSpec) -> dict[str, Any]:
    """What a tracker records as the trial's settings: domain, prompts and the searched values."""
    config = spec.config
    target = config.get("target") or config.get("target_images")
    return {"domain": spec.domain, "source": config.get("source"), "target": target,
            **{key: _plain(value) for key, value in spec.labels.get("params", {}).items()}}


def _plain(value: Any) -> Any:
    # A searched mapping (a mapper block) as text: trackers take numbers and strings.
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


def _sample(spec: TrialSpec, step: int) -> np.ndarray | None:
    """The sample grid of `step` as an HxWx3 array, when its PNG is on disk (the trial writes it before it
    reports)."""
    path = RunFolder(spec.out_dir).samples / sample_name(step)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError:
        return None


def _stable_id(sweep_root: Path, name: str) -> str:
    """A tracker run id that is the same in every `run` of this results folder (so a continued trial resumes)."""
    return hashlib.sha1(f"{sweep_root}/{name}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- TensorBoard


class TensorBoardTracker(TBXLoggerCallback):
    """Event files in <results>/tensorboard/<domain>/<trial>/: Tune's scalars (ray/tune/<metric>), the sample
    grid per evaluation ("samples") and the searched values as hparams.

    Being Tune's TBX logger, it also stands in for the one Tune would add to its own storage folder.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self._folder = folder
        self._replayed = _ReplayedTrials()

    def log_trial_start(self, trial: Trial) -> None:
        spec = self._replayed.started(trial)
        if spec is None:
            return
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        self._trial_writer[trial] = self._summary_writer_cls(str(self._folder / spec.domain / spec.name),
                                                             flush_secs=30)
        self._trial_result[trial] = {}

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        if self._replayed.skips(trial, result):
            return
        step = int(result["step"])
        super().log_trial_result(iteration, trial, {**_metrics(result), TIMESTEPS_TOTAL: step})
        image = _sample(spec_of(trial), step)
        if image is not None:
            self._trial_writer[trial].add_image("samples", image, global_step=step, dataformats="HWC")
            self._trial_writer[trial].flush()

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        if trial not in self._replayed:
            super().log_trial_end(trial, failed)

    def _try_log_hparams(self, trial: Trial, result: dict[str, Any]) -> None:
        # Tune's version logs the whole trial config; ours is a nested spec, so log what was searched instead.
        from tensorboardX.summary import hparams

        params = {key: value for key, value in _params(spec_of(trial)).items() if value is not None}
        writer = self._trial_writer[trial].file_writer
        for summary in hparams(hparam_dict=params, metric_dict=result):
            writer.add_summary(summary)


# ---------------------------------------------------------------------------------------------- MLflow


def _mlflow_callback_class() -> type:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    class MlflowTracker(MLflowLoggerCallback):
        """One MLflow run per trial (tagged with its folder, so a later `run` finds it again) in the experiment
        named after the sweep: params, metrics per step, the sample grids as artifacts."""

        def __init__(self, tracking_uri: str, experiment: str) -> None:
            super().__init__(tracking_uri=tracking_uri, experiment_name=experiment)
            self._replayed = _ReplayedTrials()

        def setup(self, *args: Any, **kwargs: Any) -> None:
            allow_file_store(self.tracking_uri)
            super().setup(*args, **kwargs)

        def log_trial_start(self, trial: Trial) -> None:
            spec = self._replayed.started(trial)
            if spec is None:
                return
            if trial not in self._trial_runs:
                client = self.mlflow_util._get_client()
                self._trial_runs[trial] = _mlflow_run(client, self.mlflow_util.experiment_id, run_name(spec))
            self.mlflow_util.log_params(run_id=self._trial_runs[trial], params_to_log=_params(spec))

        def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
            if self._replayed.skips(trial, result) or trial not in self._trial_runs:
                return
            run_id, step = self._trial_runs[trial], int(result["step"])
            self.mlflow_util.log_metrics(run_id=run_id, metrics_to_log=_metrics(result), step=step)
            path = RunFolder(spec_of(trial).out_dir).samples / sample_name(step)
            if path.is_file():
                self.mlflow_util._get_client().log_artifact(run_id, str(path), artifact_path="samples")

        def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
            if trial in self._trial_runs:
                super().log_trial_end(trial, failed)

    return MlflowTracker


def allow_file_store(tracking_uri: str) -> None:
    """MLflow 3 refuses its file store unless told otherwise; the local default mlruns/ is one, so opt in."""
    if tracking_uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def _mlflow_run(client: Any, experiment_id: str, name: str) -> str:
    """The id of the run of this trial folder (name), created when the experiment has none yet."""
    found = client.search_runs([experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{name}'", max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=name, tags={TRIAL_TAG: name}).info.run_id


# ---------------------------------------------------------------------------------------------- W&B


def _wandb_callback_class() -> type:
    from ray.air.integrations.wandb import WandbLoggerCallback

    class WandbTracker(WandbLoggerCallback):
        """One W&B run per trial in the sweep's group, with a fixed id so a later `run` resumes it; Tune runs
        each in its own logging process. Offline runs are written under <results>/wandb/."""

        def __init__(self, sweep: ResolvedSweep) -> None:
            settings = sweep.config.trackers.wandb
            super().__init__(project=settings.project, group=sweep.name, entity=settings.entity,
                             mode=sweep.config.trackers.wandb.resolved_mode(), dir=str(sweep.results_root))
            self._root = sweep.results_root
            self._replayed = _ReplayedTrials()

        def setup(self, *args: Any, **kwargs: Any) -> None:
            if self.kwargs["mode"] == "online":  # offline runs need no API key
                super().setup(*args, **kwargs)

        def log_trial_start(self, trial: Trial) -> None:
            spec = self._replayed.started(trial)
            if spec is None:
                return
            name = run_name(spec)
            # Tune's own start names the run after Tune's trial and logs its whole config; the rest is Tune's.
            self._start_logging_actor(
                trial, [*self._exclude_results, *self.excludes, "config"], id=_stable_id(self._root, name),
                name=name, resume="allow", allow_val_change=True, group=self.group,
                project=self.project, config=_params(spec), **self.kwargs)

        def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
            if self._replayed.skips(trial, result):
                return
            step = int(result["step"])
            logged: dict[str, Any] = {**_metrics(result), TRAINING_ITERATION: step}  # W&B's step axis
            image = _sample(spec_of(trial), step)
            if image is not None:
                logged["samples"] = image  # Tune's logger turns an HxWx3 array into a wandb.Image
            super().log_trial_result(iteration, trial, logged)

        def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
            if trial not in self._replayed:
                super().log_trial_end(trial, failed)

    return WandbTracker


# ---------------------------------------------------------------------------------------------- the sweep's


def tracker_callbacks(sweep: ResolvedSweep) -> list[Callback]:
    """The Tune callbacks of the trackers the sweep turns on (load_sweep has checked they are installed)."""
    trackers = sweep.config.trackers
    callbacks: list[Callback] = []
    if trackers.tensorboard:
        callbacks.append(TensorBoardTracker(sweep.results_root / TENSORBOARD))
    if sweep.mlflow_uri:
        callbacks.append(_mlflow_callback_class()(sweep.mlflow_uri, sweep.name))
    if trackers.wandb is not None:
        callbacks.append(_wandb_callback_class()(sweep))
    return callbacks


def describe(sweep: ResolvedSweep) -> list[str]:
    """Where each tracker on writes, for the plan the terminal shows."""
    trackers, lines = sweep.config.trackers, []
    if trackers.tensorboard:
        lines.append(f"tensorboard --logdir {sweep.results_root / TENSORBOARD}")
    if sweep.mlflow_uri:
        lines.append(f"MLflow experiment {sweep.name!r} at {sweep.mlflow_uri}")
    if trackers.wandb is not None:
        where = f"{trackers.wandb.entity}/" if trackers.wandb.entity else ""
        lines.append(f"W&B project {where}{trackers.wandb.project}, group {sweep.name!r} "
                     f"({trackers.wandb.resolved_mode()})")
    return lines


def log_leaderboard(sweep: ResolvedSweep, leaderboard: dict[str, Any], markdown: str) -> None:
    """The finished report's leaderboard (one row per trial) as a table in each tracker that is on."""
    rows = [{key: _plain(value) for key, value in row.items()} for row in leaderboard.get("trials", [])]
    if not rows:
        return
    if sweep.config.trackers.tensorboard:
        from tensorboardX import SummaryWriter

        with SummaryWriter(str(sweep.results_root / TENSORBOARD / LEADERBOARD)) as writer:
            # TensorBoard renders the markdown table; its step is the number of trials it ranks, so the
            # leaderboards of successive runs (a resumed sweep) stand apart.
            writer.add_text(LEADERBOARD, markdown, global_step=len(rows))
    if sweep.mlflow_uri:
        _mlflow_leaderboard(sweep, rows)
    if sweep.config.trackers.wandb is not None:
        _wandb_leaderboard(sweep, rows)


def _mlflow_leaderboard(sweep: ResolvedSweep, rows: list[dict[str, Any]]) -> None:
    from mlflow.tracking import MlflowClient

    allow_file_store(sweep.mlflow_uri)
    client = MlflowClient(sweep.mlflow_uri)
    experiment = client.get_experiment_by_name(sweep.name)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(sweep.name)
    run_id = _mlflow_run(client, experiment_id, LEADERBOARD)
    columns = {key: [row.get(key) for row in rows] for key in rows[0]}
    client.log_table(run_id, data=columns, artifact_file=f"{LEADERBOARD}.json")
    client.set_terminated(run_id)


def _wandb_leaderboard(sweep: ResolvedSweep, rows: list[dict[str, Any]]) -> None:
    import wandb

    settings = sweep.config.trackers.wandb
    run = wandb.init(project=settings.project, entity=settings.entity, group=sweep.name, name=LEADERBOARD,
                     id=_stable_id(sweep.results_root, LEADERBOARD), resume="allow", job_type=LEADERBOARD,
                     mode=settings.resolved_mode(), dir=str(sweep.results_root))
    columns = list(rows[0])
    run.log({LEADERBOARD: wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in rows])})
    run.finish()
