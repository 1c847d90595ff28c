"""Search algorithms per domain: optuna and hyperopt (Tune's own searchers), one per domain, resumable.

The learning tests drive the real per-domain searcher of a sweep on the tiny models with a synthetic objective
that peaks at a known lr per domain (nothing trains: a trial's score is a function of its lr), so what the
searchers learn is known. The end-to-end test runs a real optuna sweep, interrupts it with SIGINT and resumes it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sweep_helpers import make_sweep, status, statuses, wait_for

from nada_sweep.cli import main
from nada_sweep.errors import UserError
from nada_sweep.metric_rules import best_entry
from nada_sweep.run_files import RunFolder, Status
from nada_sweep.sweep import driver
from nada_sweep.sweep.load import load_sweep
from nada_sweep.sweep.trainable import PACK_KEY

PEAKS = {"sketch": 3e-4, "anime": 3e-3}  # the lr at which each domain's synthetic objective peaks
# The anime domain scores 100 higher everywhere, as an easy prompt's CLIP scores do: a searcher that saw its
# results while searching sketch would be thrown off, and any such value in sketch's history shows the leak.
OFFSET = {"sketch": 0.0, "anime": 100.0}
TWO_DOMAINS = """\
    - {name: sketch, target: pencil sketch}
    - {name: anime, target: anime painting}
"""


def objective(domain: str, lr: float) -> float:
    return OFFSET[domain] - abs(math.log(lr / PEAKS[domain]))


def adaptive_sweep(folder: Path, alg: str, num_samples: int, extra: str = "") -> Path:
    return make_sweep(folder, TWO_DOMAINS, search="lr: {loguniform: [0.00001, 0.1]}",
                      extra=f"search_alg: {alg}\nnum_samples: {num_samples}\n{extra}")


def searcher_of(path: Path, state: Path | None = None):
    from nada_sweep.sweep.search import PerDomainSearch

    sweep = load_sweep(path)
    return PerDomainSearch(sweep, driver.adaptive_spec(sweep), state)


def run_synthetic(searcher, count: int, first: int = 0) -> list[dict]:
    """`count` trials through the searcher's Tune interface, each scored by the synthetic objective."""
    specs = []
    for number in range(first, first + count):
        suggestion = searcher.suggest(f"tune-{number}")
        assert isinstance(suggestion, dict), suggestion
        spec = suggestion[PACK_KEY]["members"][0]
        score = objective(spec["domain"], spec["config"]["lr"])
        searcher.on_trial_result(f"tune-{number}", {"step": 2, "clip_direction": score - 0.5})
        searcher.on_trial_complete(f"tune-{number}", {"step": 4, "clip_direction": score})
        specs.append(spec)
    return specs


def distance(domain: str, lr: float) -> float:
    return abs(math.log(lr / PEAKS[domain]))


@pytest.mark.parametrize("alg", ["optuna", "hyperopt"])
def test_each_domain_searcher_moves_to_its_own_peak_and_learns_only_from_its_own_trials(tmp_path, alg):
    pytest.importorskip(alg)
    searcher = searcher_of(adaptive_sweep(tmp_path, alg, num_samples=24, extra="search_startup: 6\n"))
    specs = run_synthetic(searcher, 48)
    assert searcher.suggest("tune-last") == "FINISHED"  # 24 trials per domain, then done

    for domain in PEAKS:
        mine = [spec for spec in specs if spec["domain"] == domain]
        assert len(mine) == 24  # domains take turns, each gets its budget
        lrs = [spec["config"]["lr"] for spec in mine]
        early = sum(distance(domain, lr) for lr in lrs[:6]) / 6  # the random start
        late = sum(distance(domain, lr) for lr in lrs[-8:]) / 8
        assert late < 0.75 * early, (domain, lrs)
        # Its searcher holds exactly its own trials' values and results: never another domain's.
        history = searcher.history(domain)
        assert [trial.params["lr"] for trial in history] == lrs
        assert all(trial.told for trial in history)
        seen = _told_values(searcher.domain_searcher(domain), alg)
        assert sorted(seen) == sorted(round(objective(domain, lr), 6) for lr in lrs)
    assert {spec["out_dir"] for spec in specs} == {
        str(tmp_path / "results/tiny/trials" / spec["domain"] / spec["name"]) for spec in specs}


def _told_values(searcher, alg: str) -> list[float]:
    """The results a Tune searcher was told, read from the library's own records (rounded)."""
    if alg == "optuna":
        return [round(trial.value, 6) for trial in searcher._ot_study.trials if trial.value is not None]
    # hyperopt minimises: Tune negates the metric of a "max" search
    return [round(-trial["result"]["loss"], 6) for trial in searcher._hpopt_trials.trials
            if trial["result"].get("status") == "ok"]


def test_a_saved_search_continues_where_it_stopped(tmp_path):
    pytest.importorskip("optuna")
    path = adaptive_sweep(tmp_path, "optuna", num_samples=4)
    state = tmp_path / "results/tiny/search.pkl"
    first = searcher_of(path, state)
    done = run_synthetic(first, 4)
    for spec in done:  # what those trials left on disk: finished
        RunFolder(spec["out_dir"]).write_status(status=Status.OK, step=4, error=None)
    unfinished = first.suggest("tune-interrupted")[PACK_KEY]["members"][0]  # started, then the run was interrupted
    RunFolder(unfinished["out_dir"]).write_status(status=Status.INTERRUPTED, step=2, error=None)

    again = searcher_of(path, state)
    assert [plan.name for plan, _ in again.suggested()] == [s["name"] for s in [*done, unfinished]]
    resumed = again.suggest("new-tune-id")[PACK_KEY]["members"][0]
    assert (resumed["name"], resumed["config"]["lr"]) == (unfinished["name"], unfinished["config"]["lr"])
    domain = unfinished["domain"]
    study = again.domain_searcher(domain)._ot_study
    finished_here = [s["config"]["lr"] for s in done if s["domain"] == domain]
    assert sorted(t.params["lr"] for t in study.trials if t.value is not None) == sorted(finished_here)
    score = objective(domain, resumed["config"]["lr"])
    again.on_trial_complete("new-tune-id", {"clip_direction": score})  # the restored searcher knows it
    assert len([t for t in study.trials if t.value is not None]) == len(finished_here) + 1
    fresh = again.suggest("next")[PACK_KEY]["members"][0]  # then new suggestions go on numbering the domain's trials
    assert fresh["name"].startswith("002_" if fresh["domain"] != domain else "003_")

    grown = searcher_of(adaptive_sweep(tmp_path, "optuna", num_samples=12), state)  # a bigger budget goes on
    assert len(grown.suggested()) == len(again.suggested())

    changed = adaptive_sweep(tmp_path, "optuna", num_samples=4, extra="search_seed: 5\n")
    with pytest.raises(UserError, match=r"search_seed changed.*--fresh"):
        searcher_of(changed, state)


def test_early_stopping_per_domain_works_on_the_searchers_trials(tmp_path):
    """Tune's part played by hand: the per-domain referee judges the searcher's trials (each a pack of one), and a
    trial it stops is scored by the best it reached, as Tune tells the searcher when the stopped trial ends."""
    pytest.importorskip("optuna")
    from nada_sweep.sweep.scheduler import PerDomainASHA

    path = adaptive_sweep(tmp_path, "optuna", num_samples=3, extra="early_stopping: {grace_steps: 2}\n")
    searcher = searcher_of(path)
    referee = PerDomainASHA("clip_direction", "max", grace_steps=2, reduction_factor=2,
                            max_steps={"sketch": 4, "anime": 4})
    trials = [(f"tune-{i}", searcher.suggest(f"tune-{i}")[PACK_KEY]["members"]) for i in range(4)]
    decisions = {}
    for (trial_id, (member,)), value in zip(trials, (0.9, 0.8, 0.1, 0.05)):  # sketch, anime, sketch, anime
        result = {"step": 2, "clip_direction": value}
        searcher.on_trial_result(trial_id, result)
        decisions[trial_id] = referee.decide(member["out_dir"], member["domain"], result, member["steps"])
        if decisions[trial_id]:
            searcher.on_trial_complete(trial_id, {"member": 0, "member_ended": 1})  # its last report
    # Each late trial is behind the earlier trial of its own domain only (the domains alternate).
    assert [bool(decisions[f"tune-{i}"]) for i in range(4)] == [False, False, True, True]
    for (trial_id, (member,)), value in zip(trials[2:], (0.1, 0.05)):
        (told,) = [t for t in searcher.domain_searcher(member["domain"])._ot_study.trials if t.value is not None]
        assert told.value == value


def test_random_search_draws_every_entry_per_trial_with_a_budget_per_domain(tmp_path):
    sweep = load_sweep(make_sweep(tmp_path, TWO_DOMAINS, search="k: [0, 4]",
                                  extra="search_alg: random\nnum_samples: 5\n"))
    assert len(sweep.trials) == 10 and [dim.kind for dim in sweep.search] == ["choice"]
    for domain in PEAKS:
        names = [t.name for t in sweep.trials if t.domain == domain]
        assert names == [f"k={t.params['k']}_r{t.repeat}" for t in sweep.trials if t.domain == domain]
        assert {t.params["k"] for t in sweep.trials} == {0, 4}


@pytest.mark.parametrize(("extra", "search", "expected"), [
    ("search_alg: optuna\nnum_samples: 4\n", "k: [0, 4]",
     "search.k: a list is a grid, which optuna does not search (it picks values itself); write {choice: [0, 4]}"),
    ("search_alg: tpe\n", "k: [0, 4]", "search_alg: Input should be 'grid', 'random', 'optuna' or 'hyperopt'"),
    ("num_samples: 0\n", "k: [0, 4]", "num_samples: Input should be greater than or equal to 1"),
    ("search_startup: 3\n", "k: [0, 4]", "search_startup: applies to optuna and hyperopt only (search_alg is grid)"),
    ("search_alg: hyperopt\n", None, "search_alg: hyperopt needs at least one searched setting"),
])
def test_bad_search_settings_are_refused_at_validate(tmp_path, capsys, extra, search, expected):
    pytest.importorskip("hyperopt")
    path = make_sweep(tmp_path, TWO_DOMAINS, search=search, extra=extra)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and str(path) in err and "Traceback" not in err


def test_a_search_library_that_is_not_installed_is_named_at_validate(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    path = adaptive_sweep(tmp_path, "optuna", num_samples=2)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "search_alg: needs optuna, which is not installed here; pip install 'nada-sweep[optuna]'" in err


# ------------------------------------------------------------------------------------------------ end to end

CLI = [sys.executable, "-m", "nada_sweep.cli"]


@pytest.mark.slow
def test_an_interrupted_optuna_sweep_resumes_with_its_searchers_history(tmp_path, local_ray):
    from test_faults import end_session, lock_owner

    # 48 steps: long enough that the second trial is still training when the interrupt arrives on a fast machine
    # (at 12 it could be past its last evaluation, or done).
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n", steps=48, eval_every=4,
                      search="lr: {loguniform: [0.0005, 0.005]}",
                      extra="search_alg: optuna\nnum_samples: 3\nmax_concurrent: 1\nreport_every: 0\n")
    root = tmp_path / "results" / "tiny"
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        run = subprocess.Popen([*CLI, "run", str(path)], stdout=out, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        def one_done_one_checkpointed() -> bool:
            found = sorted((root / "trials/sketch").glob("*/")) if (root / "trials/sketch").is_dir() else []
            return len(found) >= 2 and status(found[0]) in ("ok", "stopped") and (found[1] / "state.pt").is_file()

        wait_for(lambda: run.poll() is not None or (lock_owner(root) == run.pid and one_done_one_checkpointed()),
                 300, "one trial finished and the next checkpointed")
        assert run.poll() is None, log.read_text()
        os.killpg(run.pid, signal.SIGINT)
        assert run.wait(timeout=180) == 130, log.read_text()
    finally:
        end_session(run)
    first, second = sorted((root / "trials/sketch").glob("*/"))[:2]
    interrupted_lines = (second / "metrics.jsonl").read_text().splitlines()
    before = searcher_of(path, root / "search.pkl").history("sketch")
    assert [trial.name for trial in before[:2]] == [first.name, second.name]
    assert before[0].told and not before[1].told  # the finished trial's result was kept, the other is owed

    assert main(["run", str(path)]) == 0
    after = searcher_of(path, root / "search.pkl")
    history = after.history("sketch")
    assert len(history) == 3 and all(trial.told for trial in history)
    assert [trial.params for trial in history[:2]] == [trial.params for trial in before[:2]]  # continued, not redrawn
    study = after.domain_searcher("sketch")._ot_study
    assert [round(t.params["lr"], 9) for t in study.trials] == [round(t.params["lr"], 9) for t in history]
    # Each trial's score is its best evaluation over its whole curve: the interrupted one's too, whose first
    # evaluations came from the first run (replayed from its metrics.jsonl when the rerun continued it).
    for trial, folder in zip(study.trials, sorted((root / "trials/sketch").glob("*/")), strict=True):
        best = best_entry(RunFolder(folder).history(), "clip_direction")
        assert trial.value == pytest.approx(best["clip_direction"], abs=1e-6), folder.name
    found = statuses(root)
    assert len(found) == 3 and {s["status"] for s in found.values()} <= {"ok", "stopped"}
    resumed = (second / "metrics.jsonl").read_text().splitlines()
    assert resumed[: len(interrupted_lines)] == interrupted_lines  # from its checkpoint, not from the start
    labels = json.loads((second / "config.json").read_text())["labels"]
    assert labels["params"] == before[1].params
