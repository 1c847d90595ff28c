"""The live view of a sweep: `nada-sweep status` read from the results folder alone, and the gallery that `run`
rebuilds while it goes (with its "last updated" stamp). No Ray here: the folders are written as trials do.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import threading

import pytest
import yaml
from report_helpers import fake_trial, line
from rich.console import Console
from sweep_helpers import wait_for

from nada_sweep.cli import main
from nada_sweep.report import build_report
from nada_sweep.report.status import render, sweep_status
from nada_sweep.run_files import SweepFolder
from nada_sweep.sweep.live_report import LiveReport


def a_sweep_in_progress(root):
    """Two domains, five trials planned: sketch has one finished and one running, anime one failed."""
    root.mkdir(parents=True)
    resolved = {"name": "tiny", "select_metric": "clip_direction", "num_samples": 1,
                "trials": [{"domain": d, "trial": t} for d, t in
                           (("sketch", "k=0"), ("sketch", "k=4"), ("sketch", "k=8"), ("anime", "k=0"),
                            ("anime", "k=4"))]}
    (root / SweepFolder.RESOLVED).write_text(yaml.safe_dump(resolved))
    fake_trial(root, "sketch", "k=0", [line(10, clip_direction=0.3), line(20, clip_direction=0.4)])
    # 10 steps of 40 in 20 s of training: 0.5 steps/s
    running = fake_trial(root, "sketch", "k=4", [line(10, clip_direction=0.25, elapsed_s=20.0)], status="running")
    config = running.path("config.json")
    config.write_text(config.read_text().replace('"steps": 10', '"steps": 40'))
    fake_trial(root, "anime", "k=0", [], status="failed", error="boom")


def hold_lock(root, pid: str = "4242"):
    handle = open(SweepFolder(root).lock, "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `nada-sweep run` holds it
    handle.write(pid + "\n")
    handle.flush()
    return handle


def test_status_counts_trials_per_domain_shows_running_ones_and_an_eta(tmp_path):
    root = tmp_path / "tiny"
    a_sweep_in_progress(root)
    with hold_lock(root):
        status = sweep_status(root)
    assert status.holder == "4242"
    sketch, anime = sorted(status.domains, key=lambda d: d.name, reverse=True)
    assert (sketch.planned, sketch.done, sketch.running, sketch.failed, sketch.waiting) == (3, 1, 1, 0, 1)
    assert (anime.planned, anime.done, anime.failed, anime.waiting) == (2, 0, 1, 1)
    assert (sketch.best_trial, sketch.best_value) == ("k=0", 0.4)  # the best step of the best trial so far
    assert anime.best_trial is None
    (running,) = status.running
    assert (running.trial, running.step, running.steps, running.value) == ("k=4", 10, 40, 0.25)
    assert running.rate == pytest.approx(0.5)
    # Left: 30 steps of the running trial, and two trials not started, each the mean of the known steps
    # (10, 40, 10) = 20; at the one running trial's 0.5 steps/s.
    assert status.eta_s == pytest.approx((30 + 2 * 20) / 0.5)

    console = Console(width=160, record=True)
    console.print(render(status))
    text = console.export_text()
    assert "2/5 trials finished" in text and "run in progress (pid 4242)" in text and "ETA 2m 20s" in text
    assert re.search(r"sketch\s+1\s+1\s+0\s+1\s+k=0\s+0\.4", text), text
    assert re.search(r"sketch\s+k=4\s+10/40\s+0\.25\s+0\.50\s+1m 00s", text), text


def test_status_without_a_run_says_so_and_gives_no_eta(tmp_path, capsys):
    root = tmp_path / "tiny"
    a_sweep_in_progress(root)
    assert main(["status", str(root)]) == 0
    out = capsys.readouterr().out
    assert "no `nada-sweep run` is using this folder" in out and "ETA" not in out
    assert "marked running, but no run holds the folder" in out


def test_status_of_a_folder_that_is_no_sweep_is_refused(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "holds no trials/ folder" in capsys.readouterr().err
    assert main(["status", str(tmp_path), "--interval", "0"]) == 2


def test_status_watch_redraws_until_ctrl_c(tmp_path, monkeypatch):
    from nada_sweep.report import status as status_module

    root = tmp_path / "tiny"
    a_sweep_in_progress(root)
    draws = []
    real = status_module.sweep_status

    def counted(results_dir):
        draws.append(1)
        if len(draws) == 2:  # the folder changes between two redraws: a trial finished
            fake_trial(root, "sketch", "k=4", [line(10), line(40, clip_direction=0.9)])
        if len(draws) == 3:
            raise KeyboardInterrupt
        return real(results_dir)

    monkeypatch.setattr(status_module, "sweep_status", counted)
    console = Console(width=160, record=True, force_terminal=True)
    assert status_module.status_command(root, watch=True, interval=0.01, console=console) == 0
    assert len(draws) == 3
    assert "3/5 trials finished" in console.export_text()  # the second redraw read the folder again


def test_the_gallery_says_when_it_was_updated_and_reloads_while_the_sweep_runs(tmp_path):
    root = tmp_path / "tiny"
    a_sweep_in_progress(root)
    index = build_report(root, running=True)
    html = index.read_text()
    assert re.search(r"Last updated \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC: 2 of 5 trials finished", html)
    assert '<meta http-equiv="refresh" content="60">' in html and "still running" in html
    assert "still running" in (root / "domains" / "sketch.html").read_text()
    final = build_report(root).read_text()
    assert "Last updated" in final and "refresh" not in final and "still running" not in final


def test_run_rebuilds_the_gallery_every_n_finished_trials_in_the_background(tmp_path, monkeypatch):
    from nada_sweep import report
    from nada_sweep.sweep import live_report

    root = tmp_path / "tiny"
    a_sweep_in_progress(root)
    started, release = threading.Event(), threading.Event()
    real = report.build_report
    calls = []

    def slow_build(results_dir, **kwargs):
        calls.append(kwargs)
        started.set()
        release.wait(30)  # a rebuild still going when the next falls due
        return real(results_dir, **kwargs)

    monkeypatch.setattr(report, "build_report", slow_build)
    monkeypatch.setattr(live_report, "QUIET_FACTOR", 0.0)
    live = LiveReport(root, every=2)
    live.on_trial_complete(0, [], None)
    assert not calls  # 1 finished: not yet
    live.on_trial_error(0, [], None)  # 2 finished (a failure counts): rebuild, in the background
    assert started.wait(30)
    live.on_trial_complete(0, [], None)
    live.on_trial_complete(0, [], None)  # 4: due, but one is running: it waits for the next finished trial
    release.set()
    wait_for(lambda: live.builds == 1 and not live._thread.is_alive(), 60, "the first rebuild")
    assert len(calls) == 1
    live.on_trial_complete(0, [], None)  # 5: the owed rebuild
    live.close()
    assert calls == [{"running": True}, {"running": True}] and live.builds == 2
    assert "still running" in (root / "index.html").read_text()
    assert not [p for p in root.rglob("*") if p.name.startswith(".") and p.name.endswith(".tmp")]  # all whole

    # Rebuilds are spaced by QUIET_FACTOR times the last one's duration, however often they fall due.
    monkeypatch.setattr(live_report, "QUIET_FACTOR", 1e6)
    live.on_trial_complete(0, [], None)  # 6: due, built (the last rebuild was spaced with factor 0)
    live.close()
    for _ in range(6):  # 8, 10, 12 fall due: too soon after the last
        live.on_trial_complete(0, [], None)
    live.close()
    assert live.builds == 3


def test_report_every_zero_never_rebuilds(tmp_path, monkeypatch):
    from nada_sweep import report

    monkeypatch.setattr(report, "build_report", lambda *a, **k: pytest.fail("rebuilt"))
    live = LiveReport(tmp_path, every=0)
    for _ in range(5):
        live.on_trial_complete(0, [], None)
    live.close()
    assert live.builds == 0 and os.listdir(tmp_path) == []


def test_status_loads_neither_torch_nor_ray(tmp_path):
    # It runs beside a sweep, maybe on a login node: it must start fast and touch nothing but the folder.
    root = tmp_path / "tiny"
    a_sweep_in_progress(root)
    code = ("import sys\nfrom nada_sweep.cli import main\n"
            f"assert main(['status', {str(root)!r}]) == 0\n"
            "print('loaded:', sorted(m for m in ('torch', 'torchvision', 'clip', 'ray') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout and "2/5 trials finished" in result.stdout
