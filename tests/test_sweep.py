"""The sweep on real Ray (local, 2 CPUs) with the built-in tiny models: completion, failures, locks, early stopping.

The end-to-end tests start Ray; each keeps its step budget tiny so the file stays within a few minutes. Faults
(Ctrl+C and resume, killed processes, a lost node, divergence) are tested in test_faults.py.
"""

from __future__ import annotations

import fcntl
import json
import os

import pytest
from rich.console import Console
from sweep_helpers import make_sweep, statuses, write_undecodable_png

from nada_sweep import run_files
from nada_sweep.adapt.settings import MapperSettings
from nada_sweep.cli import main
from nada_sweep.sweep.load import load_sweep
from nada_sweep.run_files import SweepFolder
from nada_sweep.sweep import driver, space
from nada_sweep.sweep.packs import estimated_cost


@pytest.mark.slow
def test_sweep_runs_every_trial_and_reports_a_failing_one(tmp_path, capsys, local_ray):
    broken = tmp_path / "broken_style"
    broken.mkdir()
    write_undecodable_png(broken / "style.png")  # passes validation, fails when the trial decodes it
    path = make_sweep(tmp_path, """\
        - {name: sketch, target: pencil sketch}
        - {name: anime, target: anime painting}
        - {name: broken, target: painting, target_images: broken_style}
    """)
    # Early stopping on: whichever trial of a domain reports second at step 2 may be stopped if behind.
    path.write_text(path.read_text() + "early_stopping: {grace_steps: 2, reduction_factor: 2}\n")

    code = main(["run", str(path)])
    out = capsys.readouterr().out

    assert code == 1  # one domain's trials failed
    root = tmp_path / "results" / "tiny"
    assert (root / "sweep.resolved.yaml").is_file()
    found = statuses(root)
    for domain in ("sketch", "anime"):
        assert {found[f"{domain}/k=0"]["status"], found[f"{domain}/k=4"]["status"]} & {"ok"}
        for trial in ("k=0", "k=4"):
            folder = root / "trials" / domain / trial
            status = found[f"{domain}/{trial}"]
            evals = 2 if status["status"] == "ok" else 1  # evals at steps 2 and 4, or stopped after step 2
            assert status["status"] == "ok" or (status["status"] == "stopped" and status["step"] == 2), status
            for name in ("config.json", "metrics.jsonl", "generator.pt", f"samples/step_00000{2 * evals}.png"):
                assert (folder / name).is_file(), folder / name
            assert len(run_files.RunFolder(folder).history()) == evals
            labels = json.loads((folder / "config.json").read_text())["labels"]
            assert labels == {"sweep": "tiny", "domain": domain, "trial": trial, "params": {"k": int(trial[2:])},
                              "demo": False}
    for trial in ("k=0", "k=4"):
        status = found[f"broken/{trial}"]
        assert status["status"] == "failed" and status["error"]
    assert "4/6 trials succeeded, 2 failed" in out
    assert "failed: broken/k=0" in out
    assert (root / "index.html").is_file()  # the report is built at the end


def test_trials_start_longest_first(tmp_path):
    path = make_sweep(tmp_path, """\
        - {name: sketch, target: pencil sketch}
        - {name: anime, target: anime painting, steps: 8}
    """, extra="pack: 1\n")
    sweep = load_sweep(path)
    specs = [driver.trial_spec(sweep, i) for i in range(len(sweep.trials))]
    packs = driver.plan_packs(sweep, specs)  # pack: 1, each trial a pack of one
    assert [pack.index for pack in packs] == [0, 1, 2, 3]
    order = [f"{s.domain}/{s.name}" for pack in packs for s in pack.members]
    # Layer selection (k > 0) costs more per step than k = 0, and more steps cost more.
    assert order == ["anime/k=4", "sketch/k=4", "anime/k=0", "sketch/k=0"]


def test_estimated_cost_counts_steps_selection_and_mapper(tiny_config):
    base = estimated_cost(tiny_config.model_copy(update={"k": 0}))
    assert estimated_cost(tiny_config.model_copy(update={"k": 0, "steps": 2 * tiny_config.steps})) == 2 * base
    assert estimated_cost(tiny_config.model_copy(update={"k": 2})) > base
    assert estimated_cost(tiny_config.model_copy(update={"k": 2, "auto_layer_iters": 0})) == base
    with_mapper = tiny_config.model_copy(update={"k": 0, "mapper": MapperSettings()})
    assert estimated_cost(with_mapper) > base


def test_dry_run_starts_no_ray(tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")

    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init called by a dry run")

    monkeypatch.setattr(ray, "init", no_ray)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # so a run would have to start Ray
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n")
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "2 trials = 1 domains x 2" in capsys.readouterr().out
    assert not (tmp_path / "results").exists()


def test_second_run_on_the_same_results_refuses(tmp_path, capsys):
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n")
    root = tmp_path / "results" / "tiny"
    root.mkdir(parents=True)
    with open(root / SweepFolder.LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `nada-sweep run` holds it
        held.write("4242\n")
        held.flush()
        assert main(["run", str(path)]) == 2
    assert "another `nada-sweep run` (pid 4242)" in capsys.readouterr().err


def test_changed_settings_refuse_to_mix_with_old_trials(tmp_path, capsys):
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n")
    sweep = load_sweep(path)
    old = sweep.adapt_config(sweep.trials[0]).model_dump(mode="json") | {"steps": 999}
    folder = sweep.trial_dir(sweep.trials[0])
    folder.mkdir(parents=True)
    run_files.write_json(folder / run_files.CONFIG, {"config": old})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "sketch/k=0: steps changed" in err and "--fresh" in err


def test_fresh_moves_old_results_aside(tmp_path):
    root = tmp_path / "results" / "tiny"
    (root / "trials").mkdir(parents=True)
    (root / "trials" / "keep.txt").write_text("old")
    moved = driver.move_aside(root, Console(file=open(os.devnull, "w")))
    assert moved is not None and not root.exists()
    assert (moved / "trials" / "keep.txt").read_text() == "old"
    assert moved.name.startswith("tiny.old-")


def test_expansion_is_stable_when_domains_are_added():
    dims = space.parse_search({"k": [0, 4], "lr": {"loguniform": [1e-3, 1e-2]}}, ["k", "lr"])
    before = space.expand(["a"], dims, num_samples=2, seed=7)
    after = space.expand(["z", "a", "b"], dims, num_samples=3, seed=7)
    kept = {(t.domain, t.name): t.params for t in after}
    assert all(kept[t.domain, t.name] == t.params for t in before)
    assert len(after) == 3 * 2 * 3  # domains x grid cells x repeats


def test_early_stopping_compares_trials_only_within_their_domain():
    pytest.importorskip("ray")
    from nada_sweep.sweep.scheduler import PerDomainASHA

    referee = PerDomainASHA("clip_direction", "max", grace_steps=10, reduction_factor=2,
                            max_steps={"easy": 100, "hard": 100})

    def decide(member, domain, value, budget=100):
        return referee.decide(member, domain, {"step": 10, "clip_direction": value}, budget)

    for i, value in enumerate((0.7, 0.8, 0.9)):  # each above the median so far
        assert decide(f"easy{i}", "easy", value) is None
    # Far below every easy trial, but alone in its domain: it goes on.
    assert decide("hard0", "hard", 0.05) is None
    reason = decide("easy3", "easy", 0.1)
    assert reason == "early stopping: clip_direction behind the other trials of its domain"
    assert decide("easy3", "easy", 0.1) is None  # told again (a replayed curve): judged once per rung only
    # A trial that reached its own budget is never "stopped early"; an evaluation without the metric is no rung.
    assert decide("easy4", "easy", 0.0, budget=10) is None
    assert referee.decide("easy5", "easy", {"step": 10}, 100) is None
