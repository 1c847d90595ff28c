"""Experiment trackers on a real demo-size sweep (local Ray, tiny models): TensorBoard event files read back with
TensorBoard's own reader, MLflow runs in a local file store, W&B runs written offline (no network); the gallery
rebuilt while the sweep runs and `status` reading the folder meanwhile. Bad tracker settings fail at validate.
"""

from __future__ import annotations

import json
import os

import pytest
from sweep_helpers import make_sweep, statuses, tensorboard_events

from nada_sweep.cli import main

ONE_DOMAIN = "- {name: sketch, target: pencil sketch}\n"
TRACKERS = """\
report_every: 1
trackers:
  tensorboard: true
  mlflow:
  wandb: {mode: offline, project: nada-test}
"""


@pytest.mark.slow
def test_a_sweep_feeds_every_tracker_once_and_the_live_gallery(tmp_path, local_ray, monkeypatch):
    for module in ("tensorboard", "mlflow", "wandb"):
        pytest.importorskip(module)
    from mlflow.tracking import MlflowClient

    from nada_sweep import report
    from nada_sweep.report.status import sweep_status

    monkeypatch.setenv("WANDB_SILENT", "true")
    # k: [0, 4], both trials in one pack: the trackers see each member as a trial of its own.
    packed = "- {name: sketch, target: pencil sketch, params: stylespace}\n"
    path = make_sweep(tmp_path, packed, steps=4, eval_every=2, extra=TRACKERS + "pack: 2\n")
    root = tmp_path / "results" / "tiny"
    builds, seen_while_running = [], []
    real_build = report.build_report

    def watched_build(results_dir, **kwargs):
        builds.append(kwargs.get("running", False))
        if kwargs.get("running"):  # a rebuild during the run: what `status` sees of it from outside
            seen_while_running.append(sweep_status(results_dir))
        return real_build(results_dir, **kwargs)

    monkeypatch.setattr(report, "build_report", watched_build)
    assert main(["run", str(path)]) == 0
    assert {s["status"] for s in statuses(root).values()} == {"ok"}

    # The gallery was rebuilt while the run went on (report_every: 1), then once more at the end.
    assert builds[-1] is False and True in builds[:-1]
    assert seen_while_running and all(s.holder == str(os.getpid()) for s in seen_while_running)
    assert any(s.count("done") >= 1 for s in seen_while_running)
    final = (root / "index.html").read_text()
    assert "2 of 2 trials finished" in final and "refresh" not in final

    # TensorBoard: one run per trial named as its folder, a scalar and a sample image per eval step.
    for trial in ("k=0", "k=4"):
        events = tensorboard_events(root / "tensorboard" / "sketch" / trial)
        metrics = (root / "trials" / "sketch" / trial / "metrics.jsonl").read_text().splitlines()
        scalars = events.Scalars("ray/tune/clip_direction")
        assert [e.step for e in scalars] == [2, 4] == [json.loads(m)["step"] for m in metrics]
        assert [(e.step, e.width, e.height) for e in events.Images("samples")] == [(2, 134, 68), (4, 134, 68)]
    board = tensorboard_events(root / "tensorboard" / "leaderboard")
    assert "leaderboard/text_summary" in board.Tags()["tensors"]

    # MLflow: a local file store in the results folder, one run per trial with its metrics per step.
    client = MlflowClient((root / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("tiny")
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"sketch/k=0", "sketch/k=4", "leaderboard"}
    for name in ("sketch/k=0", "sketch/k=4"):
        run = runs[name]
        assert run.info.status == "FINISHED" and run.data.params["k"] == name[-1]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "clip_direction")] == [2, 4]
        assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == [
            "samples/step_000002.png", "samples/step_000004.png"]
    assert [a.path for a in client.list_artifacts(runs["leaderboard"].info.run_id)] == ["leaderboard.json"]

    # W&B offline: a run folder per trial (with its sample images) and one for the leaderboard table.
    offline = sorted((root / "wandb").glob("offline-run-*"))
    assert len(offline) == 3 and all(list(folder.glob("run-*.wandb")) for folder in offline)
    images = [folder for folder in offline if list((folder / "files/media/images").glob("samples_*.png"))]
    assert len(images) == 2
    assert len([f for f in offline if list(f.glob("files/media/table/leaderboard_*.table.json"))]) == 1

    # Run again: the finished trials are only replayed to Tune, and no tracker logs them a second time.
    assert main(["run", str(path)]) == 0
    for name in ("sketch/k=0", "sketch/k=4"):
        history = client.get_metric_history(runs[name].info.run_id, "clip_direction")
        assert [m.step for m in history] == [2, 4]
        assert len(client.search_runs([experiment.experiment_id], f"tags.`nada_sweep.trial` = '{name}'")) == 1
    for trial in ("k=0", "k=4"):
        assert len(list((root / "tensorboard" / "sketch" / trial).iterdir())) == 1
    offline = sorted((root / "wandb").glob("offline-run-*"))
    assert len([f for f in offline if list((f / "files/media/images").glob("samples_*.png"))]) == 2


@pytest.mark.parametrize(("trackers", "expected"), [
    ("trackers: [tensorbord]", "trackers: unknown tracker 'tensorbord'; the trackers are tensorboard, wandb, mlflow"),
    ("trackers: {comet: {}}", "trackers: unknown tracker 'comet'; the trackers are tensorboard, wandb, mlflow"),
    ("trackers: {wandb: {project: 3}}", "trackers.wandb.project: Input should be a valid string"),
    ("trackers: {wandb: {mode: dryrun}}", "trackers.wandb.mode: Input should be 'online' or 'offline'"),
])
def test_bad_tracker_settings_are_refused_at_validate(tmp_path, capsys, trackers, expected):
    path = make_sweep(tmp_path, ONE_DOMAIN, extra=trackers + "\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_a_tracker_that_is_not_installed_is_named_at_validate(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    path = make_sweep(tmp_path, ONE_DOMAIN, extra="trackers: [mlflow]\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "trackers.mlflow: needs mlflow, which is not installed here; pip install 'nada-sweep[mlflow]'" in err


def test_tensorboard_is_on_by_default_only_where_it_is_installed(tmp_path, monkeypatch):
    import importlib.util

    from nada_sweep.sweep.load import load_sweep

    path = make_sweep(tmp_path, ONE_DOMAIN)
    assert load_sweep(path).config.trackers.tensorboard is (importlib.util.find_spec("tensorboard") is not None)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert load_sweep(path).config.trackers.tensorboard is False  # not installed: off, and no complaint


def test_online_wandb_without_an_api_key_is_refused_at_validate(tmp_path, capsys, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(type(wandb.api), "api_key", property(lambda self: None))
    path = make_sweep(tmp_path, ONE_DOMAIN, extra="trackers: {wandb: {project: x}}\n")
    assert main(["validate", str(path)]) == 2
    assert "trackers.wandb: no W&B API key on this machine" in capsys.readouterr().err
    offline = make_sweep(tmp_path, ONE_DOMAIN, extra="trackers: {wandb: {project: x, mode: offline}}\n")
    assert main(["validate", str(offline)]) == 0
