"""Faults a long sweep meets on shared machines, on real Ray with the built-in tiny models.

Ctrl+C during `nada-sweep run` (a real process), a trial's process killed, a Ray node lost from a two-node
cluster, a trial whose weights diverge, a GPU request the cluster cannot meet, and files written atomically.
Every Ray test keeps its step budget tiny; the file stays within a few minutes on two loaded cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from report_helpers import fake_trial, line
from sweep_helpers import make_sweep, status, statuses, tensorboard_events, wait_for

from nada_sweep import run_files
from nada_sweep.adapt.run import TrainingDiverged, run_adaptation
from nada_sweep.cli import main
from nada_sweep.sweep.load import load_sweep
from nada_sweep.models.checkpoints import load_generator, save_generator
from nada_sweep.report import build_report
from nada_sweep.run_files import RunFolder
from nada_sweep.run_files import SweepFolder
from nada_sweep.sweep import driver

CLI = [sys.executable, "-m", "nada_sweep.cli"]
ONE_DOMAIN = "- {name: sketch, target: pencil sketch}\n"


# ------------------------------------------------------------------------------------------------ helpers


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file under `folder`: equal snapshots mean nothing was rewritten."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in skip
    }


def strict_lines(path: Path) -> list[dict]:
    """metrics.jsonl as strict JSON: a NaN or Infinity token (which Python would accept) fails."""
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}")

    return [json.loads(text, parse_constant=refuse) for text in path.read_text().splitlines()] if path.exists() else []


def lock_owner(root: Path) -> int | None:
    try:
        return int((root / SweepFolder.LOCK).read_text().strip())
    except (OSError, ValueError):
        return None


def trial_processes(parent: Any) -> list[Any]:
    """Ray worker processes running a trial (Tune's ImplicitFunc actor) below `parent` (a psutil.Process)."""
    import psutil

    found = []
    for child in parent.children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # ended while we looked
            pass
    return found


def session_processes(session: int) -> list[int]:
    """Live processes of a session (a driver started with start_new_session=True and everything it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            alive = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            if alive and os.getsid(int(entry.name)) == session:
                found.append(int(entry.name))
        except (OSError, IndexError):
            pass
    return found


def end_session(driver: subprocess.Popen, grace: float = 20) -> list[int]:
    """Wait for a driver's session to empty; SIGKILL whatever is left (only processes this test started)."""
    if driver.poll() is None:
        driver.kill()
        driver.wait()
    deadline = time.monotonic() + grace
    while session_processes(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = session_processes(driver.pid)
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return leftovers


def run_in_thread(argv: list[str], timeout: float) -> int | None:
    """`main(argv)` in a daemon thread; None when it has not returned within `timeout` (a hang)."""
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("code", main(argv)), daemon=True)
    thread.start()
    thread.join(timeout)
    return result.get("code")


# ------------------------------------------------------------------------------------------------ lost node


@pytest.mark.slow
def test_trials_of_a_lost_node_are_rescheduled_and_the_sweep_completes(tmp_path):
    pytest.importorskip("ray")
    import psutil
    from ray.cluster_utils import Cluster

    path = make_sweep(tmp_path, ONE_DOMAIN, eval_every=4, search="steps: [30, 34]", extra="retries: 1\n")
    root = tmp_path / "results" / "tiny"
    log = tmp_path / "run.log"
    # A head and a second node on this machine, one CPU each: each node runs one of the two trials. (First in
    # this file, before the module's local Ray exists, so the two clusters never compete for the two cores.)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    driver = None
    try:
        doomed = cluster.add_node(num_cpus=1)
        raylet = psutil.Process(doomed.all_processes["raylet"][0].process.pid)
        with open(log, "w") as out:
            driver = subprocess.Popen([*CLI, "run", str(path), "--address", cluster.address], stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: driver.poll() is not None or (
            trial_processes(raylet) and any(root.glob("trials/sketch/*/state.pt"))), 240,
            "a trial running on the second node")
        assert driver.poll() is None, log.read_text()
        cluster.remove_node(doomed, allow_graceful=False)  # as a machine that loses power
        code = driver.wait(timeout=300)
    finally:
        if driver is not None:
            end_session(driver)
        cluster.shutdown()
    output = log.read_text()

    assert code == 0, output
    assert output.count("retry   sketch/") == 1  # the lost node's trial, and only it, started again
    assert {s["status"] for s in statuses(root).values()} == {"ok"} and len(statuses(root)) == 2
    for steps in (30, 34):
        history = RunFolder(root / f"trials/sketch/steps={steps}").history()
        assert [entry["step"] for entry in history] == [*range(4, steps, 4), steps]  # none lost or repeated


# ------------------------------------------------------------------------------------------------ Ctrl+C


@pytest.mark.slow
def test_ctrl_c_stops_the_run_cleanly_and_the_rerun_loses_nothing(tmp_path, local_ray):
    # The interrupted run is a real `nada-sweep run` process with its own Ray; the rerun uses this module's Ray.
    # The long trial long enough to be still training when the short one has finished, on a fast machine too
    # (with 24 steps both ended within the same half second there).
    path = make_sweep(tmp_path, ONE_DOMAIN, eval_every=4, search="steps: [4, 120]")
    root = tmp_path / "results" / "tiny"
    short, long = root / "trials/sketch/steps=4", root / "trials/sketch/steps=120"
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        # Its own session: Ctrl+C in a terminal signals the whole foreground group (driver and Ray's processes).
        driver = subprocess.Popen([*CLI, "run", str(path)], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for(lambda: lock_owner(root) == driver.pid or driver.poll() is not None, 120, "the run's lock")
        second = subprocess.run([*CLI, "run", str(path)], capture_output=True, text=True, timeout=120)
        wait_for(lambda: driver.poll() is not None or (status(short) == "ok" and (long / "state.pt").is_file()),
                 240, "one trial finished and the other checkpointed")
        assert driver.poll() is None, log.read_text()
        os.killpg(driver.pid, signal.SIGINT)
        code = driver.wait(timeout=180)
    finally:
        leftovers = end_session(driver)
    output = log.read_text()

    # A second `run` on the same results folder refused while the first held it.
    assert second.returncode == 2, second.stderr
    assert f"another `nada-sweep run` (pid {driver.pid}) is using this results folder" in second.stderr
    assert "Traceback" not in second.stderr

    assert code == 130, output
    assert "run the same command again to continue them" in output and "Traceback" not in output
    assert leftovers == [], "Ray processes outlived the interrupted run"
    assert status(short) == "ok"
    assert status(long) == "interrupted" and (long / "state.pt").is_file()
    finished = snapshot(short)
    first_evals = (long / "metrics.jsonl").read_text().splitlines()
    assert first_evals

    assert main(["run", str(path)]) == 0
    assert {s["status"] for s in statuses(root).values()} == {"ok"} and len(statuses(root)) == 2
    assert snapshot(short) == finished  # the finished trial was not rerun: not one of its files was rewritten
    resumed = (long / "metrics.jsonl").read_text().splitlines()
    assert resumed[: len(first_evals)] == first_evals  # continued from its checkpoint, not restarted
    assert [json.loads(text)["step"] for text in resumed] == list(range(4, 121, 4))  # no eval lost or repeated
    # The rerun replayed the first run's evaluations of the long trial to Tune; TensorBoard logged none of them
    # twice, and every evaluation of the rerun. (The interrupted run may lose its last ones: the interrupt can
    # come between a trial's report and the driver's logging of it.)
    steps = [event.step for event in
             tensorboard_events(root / "tensorboard/sketch/steps=120").Scalars("ray/tune/clip_direction")]
    assert steps == sorted(set(steps))
    assert set(range(json.loads(first_evals[-1])["step"] + 4, 121, 4)) <= set(steps)
    assert not (long / "state.pt").exists()


# ------------------------------------------------------------------------------------------------ killed process


@pytest.mark.slow
@pytest.mark.parametrize("retries", [1, 0])
def test_killed_trial_process_is_retried_or_recorded_as_failed(tmp_path, capsys, local_ray, retries):
    import psutil  # Ray ships it (ray/thirdparty_files, on sys.path once ray is imported)

    path = make_sweep(tmp_path, ONE_DOMAIN, steps=12, eval_every=2, search=None, extra=f"retries: {retries}\n")
    trial = tmp_path / "results/tiny/trials/sketch/default"
    killed: list[int] = []
    before_kill: list[str] = []

    def kill_once_checkpointed() -> None:
        wait_for(lambda: (trial / "state.pt").is_file(), 240, "the trial's first checkpoint")
        before_kill.extend((trial / "metrics.jsonl").read_text().splitlines())
        for process in trial_processes(psutil.Process()):  # this test's own Ray: its processes are ours
            process.kill()
            killed.append(process.pid)

    killer = threading.Thread(target=kill_once_checkpointed, daemon=True)
    killer.start()
    code = main(["run", str(path)])
    killer.join(10)
    output = "".join(capsys.readouterr())

    assert len(killed) == 1 and before_kill, "no trial process was killed"
    history = (trial / "metrics.jsonl").read_text().splitlines()
    assert history[: len(before_kill)] == before_kill  # nothing recorded before the kill is lost
    recorded = json.loads((trial / "status.json").read_text())
    if retries:
        assert code == 0, output
        assert "retry   sketch/default after an error" in output
        assert recorded["status"] == "ok"
        assert [json.loads(text)["step"] for text in history] == list(range(2, 13, 2))  # resumed, not restarted
    else:
        assert code == 1, output
        assert recorded["status"] == "failed"
        assert "process ended without recording an error" in recorded["error"]
        assert "failed: sketch/default: the trial's process ended" in output
        assert (trial / "state.pt").is_file()  # the next run continues from here


# ------------------------------------------------------------------------------------------------ divergence


@pytest.mark.slow
def test_diverging_trial_stops_as_diverged_and_the_sweep_goes_on(tmp_path, capsys, local_ray):
    # A huge learning rate overflows the weights within one step: a natural NaN, no test hook.
    path = make_sweep(tmp_path, ONE_DOMAIN, steps=4, eval_every=1, search="lr: [0.002, 1.0e+20]",
                      extra="retries: 1\n")
    root = tmp_path / "results" / "tiny"
    code = main(["run", str(path)])
    output = "".join(capsys.readouterr())

    assert code == 1, output
    found = statuses(root)
    (good,) = [name for name, s in found.items() if s["status"] == "ok"]
    (bad,) = [name for name, s in found.items() if s["status"] == "diverged"]
    assert f"diverged: {bad}: " in output
    error = found[bad]["error"]
    # The trainer's own record, kept through Tune's retry (which does not train a diverged trial again).
    assert "non-finite" in error and "try a lower lr than 1e+20" in error
    folder = root / "trials" / bad
    # Nothing the overflowing weights produced was written: no checkpoint, no weights, no eval line or grid.
    assert not (folder / "state.pt").exists() and not (folder / "generator.pt").exists()
    assert strict_lines(folder / "metrics.jsonl") == []
    assert sorted(p.name for p in (folder / "samples").iterdir()) == ["source.png"]
    assert len(strict_lines(root / "trials" / good / "metrics.jsonl")) == 4


def test_nan_loss_stops_the_run_before_anything_of_it_is_written(tiny_config, tmp_path):
    # The first update overflows; the loss of step 2 is NaN, before any evaluation (eval_every 2).
    config, out = tiny_config.model_copy(update={"lr": 1e20, "eval_every": 2}), tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="training loss became nan at step 2"):
        run_adaptation(config, out)
    recorded = RunFolder(out).status()
    assert recorded["status"] == "diverged" and recorded["step"] == 1
    assert not (out / "state.pt").exists() and not (out / "generator.pt").exists()
    assert strict_lines(out / "metrics.jsonl") == []


# ------------------------------------------------------------------------------------------------ resources


@pytest.mark.slow
def test_gpus_the_cluster_lacks_are_refused_at_once_and_nothing_is_touched(tmp_path, capsys, local_ray):
    path = make_sweep(tmp_path, ONE_DOMAIN, extra="resources: {cpus: 1, gpus: 1}\n")
    root = tmp_path / "results" / "tiny"
    (root / "trials/sketch/k=0").mkdir(parents=True)  # an earlier run's results
    (root / "trials/sketch/k=0/notes.txt").write_text("kept")
    (root / SweepFolder.RESOLVED).write_text("# the resolved config of the earlier run\n")
    before = snapshot(root)

    code = run_in_thread(["run", str(path)], timeout=120)

    assert code is not None, "the run waits for GPUs instead of refusing"
    err = capsys.readouterr().err
    assert code == 2, err
    assert "sweep.yaml:8: resources.gpus: each pack asks for 1 GPU but the Ray cluster has" in err
    assert "set it to 0" in err and "--demo" in err and "Traceback" not in err
    assert snapshot(root) == before  # the lock file included: nothing is written before the checks pass


# ------------------------------------------------------------------------------------------------ atomic files


def _metrics(root: Path) -> Callable[[], None]:
    folder = fake_trial(root, "sketch", "k=0", [line(2), line(4)])
    return lambda: folder.write_history([line(2), line(4), line(6)])


def _status(root: Path) -> Callable[[], None]:
    folder = fake_trial(root, "sketch", "k=0", [line(2)], status="running")
    return lambda: folder.write_status(status="ok", step=6, error=None)


def _resolved(root: Path) -> Callable[[], None]:
    root.mkdir(parents=True)
    (root / SweepFolder.RESOLVED).write_text("# an earlier run's resolved config\n")
    sweep = load_sweep(make_sweep(root.parent.parent, ONE_DOMAIN))
    assert sweep.results_root == root
    return lambda: driver.write_resolved(sweep)


def _report(root: Path) -> Callable[[], None]:
    fake_trial(root, "sketch", "k=0", [line(2), line(4)])
    build_report(root)
    fake_trial(root, "anime", "k=4", [line(2, clip_direction=0.5)])  # so the next report differs
    return lambda: build_report(root)


def _generator(root: Path) -> Callable[[], None]:
    path = root / "trials/sketch/k=0" / run_files.GENERATOR
    tiny = load_generator("builtin:tiny").generator
    save_generator(path, tiny)
    return lambda: save_generator(path, tiny, metadata={"new": 1})


# file -> writes its old version under the results folder `root` and returns the writer of a new version
ATOMIC_FILES: dict[str, Callable[[Path], Callable[[], None]]] = {
    run_files.METRICS: _metrics,
    run_files.STATUS: _status,
    SweepFolder.RESOLVED: _resolved,
    "leaderboard.csv": _report,
    "leaderboard.md": _report,
    "leaderboard.json": _report,
    "index.html": _report,
    run_files.GENERATOR: _generator,
}


@pytest.mark.parametrize("name", ATOMIC_FILES)
def test_a_crash_while_writing_leaves_the_old_file_whole(tmp_path, monkeypatch, name):
    root = tmp_path / "results" / "tiny"
    write_new = ATOMIC_FILES[name](root)
    (old,) = [p for p in root.rglob(name) if p.parent.name != "best"]
    old_bytes = old.read_bytes()
    real_replace = os.replace

    def crash_before_rename(src, dst, *args, **kwargs):
        if Path(dst).name == name:  # the process dies after writing the new version, before renaming it
            raise OSError("simulated crash")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash_before_rename)
    with pytest.raises(OSError, match="simulated crash"):
        write_new()
    assert old.read_bytes() == old_bytes  # readers see the whole old version, never half a new one
    assert not list(old.parent.glob(f".{name}*"))  # and no temporary file is left behind
    monkeypatch.setattr(os, "replace", real_replace)
    write_new()
    assert old.read_bytes() != old_bytes  # the writer really writes this file
    if name == "generator.pt":
        assert torch.load(old, weights_only=True)["nada_sweep"]["new"] == 1
