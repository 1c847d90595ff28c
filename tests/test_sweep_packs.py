"""Packs in the sweep: `pack: N`, the packs `validate` shows, and on real Ray with the tiny models: members equal
to the same trials unpacked, a member failing or diverging while the others finish, per-domain early stopping of
members inside a pack, and Ctrl+C during a packed sweep then resume.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from sweep_helpers import make_sweep, status, statuses, wait_for, write_undecodable_png
from test_faults import CLI, end_session, lock_owner, snapshot

from nada_sweep.cli import main
from nada_sweep.run_files import RunFolder, Status
from nada_sweep.sweep.trainable import MEMBER, MEMBER_ENDED, PACK_KEY, PackSpec, TrialSpec

TOLERANCE = 1e-4
NOT_COMPARED = {"elapsed_s"}  # wall time differs between any two runs
# Two light modes (they share a pack: only the generator, CLIP models, device and precision must agree).
LIGHT_DOMAINS = """\
    - {name: sketch, target: pencil sketch, params: stylespace}
    - {name: anime, target: anime painting, params: domain_mod}
"""


def _histories(root: Path) -> dict[str, list[dict]]:
    return {name: RunFolder(root / "trials" / name).history() for name in statuses(root)}


# ------------------------------------------------------------------------------------------------ validate, bad input


def test_validate_shows_the_packs_and_who_trains_alone(tmp_path, capsys):
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n- {name: anime, target: anime painting}\n",
                      search="params: [full, stylespace]\n  k: [0, 4]",
                      extra="pack: 3\nmax_concurrent: 1\n")  # one pack at a time: only `pack` splits them
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    # Packs are numbered as their Tune trial folders are: the four light trials in two even packs (a domain
    # each); the full trials train alone.
    assert out.count("params=stylespace_k=0 (lr 0.05, pack 0)") == out.count("params=stylespace_k=4 (lr 0.05, pack 0)") == 1
    assert out.count("params=stylespace_k=0 (lr 0.05, pack 1)") == 1
    assert out.count("params=full_k=0 (lr 0.002),") == out.count("params=full_k=4 (lr 0.002),") == 2
    assert ("packs: 6 for 8 trials, at most 3 trials each; 4 trials in 2 packs trained together, 4 alone (full "
            "trials train alone in the sweep: with k > 0 a pack steps them one at a time, and at k = 0 "
            "packs of them were slower at 512 channels)") in out
    assert "each pack: 1 CPU" in out

    path.write_text(path.read_text().replace("pack: 3", "pack: 1"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "packs: none, every trial trains alone (pack: 1)" in out and ", pack " not in out


def test_packs_are_split_evenly_over_the_packs_that_train_at_once(tmp_path, capsys):
    # Six light trials, at most 8 a pack, two packs at a time: two packs of 3 keep both workers busy.
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n- {name: anime, target: anime painting}\n",
                      search="params: [stylespace]\n  lr: [0.01, 0.02, 0.03]", extra="pack: 8\nmax_concurrent: 2\n")
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "packs: 2 for 6 trials, at most 8 trials each; 6 trials in 2 packs trained together" in out
    assert out.count(", pack 0)") == 3 and out.count(", pack 1)") == 3
    # Eight trials in packs of at most 6: two packs of 4 (a domain each), not 6 + 2.
    path.write_text(path.read_text().replace("[0.01, 0.02, 0.03]", "[0.01, 0.02, 0.03, 0.04]").replace(
        "pack: 8", "pack: 6"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "packs: 2 for 8 trials, at most 6 trials each; 8 trials in 2 packs trained together" in out
    assert out.count(", pack 0)") == out.count(", pack 1)") == 4


def test_the_default_pack_follows_the_device_and_is_one_for_adaptive_searches(tmp_path):
    from nada_sweep.sweep.load import load_sweep
    from nada_sweep.sweep.schema import DEFAULT_PACK

    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n")
    assert load_sweep(path).pack_size == DEFAULT_PACK["cpu"]
    path.write_text(path.read_text() + "resources: {gpus: 0.5}\n")
    assert load_sweep(path).pack_size == DEFAULT_PACK["gpu"]
    pytest.importorskip("optuna")
    adaptive = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n", search="lr: {choice: [0.1, 0.2]}",
                          extra="search_alg: optuna\nnum_samples: 2\n")
    assert load_sweep(adaptive).pack_size == 1


@pytest.mark.parametrize(("value", "message"), [
    ("0", "pack: Input should be greater than or equal to 1 (got 0)"),
    ("-2", "pack: Input should be greater than or equal to 1 (got -2)"),
    ("2.5", "pack: Input should be a valid integer (got 2.5)"),
    ("four", "pack: Input should be a valid integer (got 'four')"),
    ("true", "pack: Input should be a valid integer (got True)"),
])
def test_bad_pack_values_are_one_located_error(tmp_path, capsys, value, message):
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n", extra=f"pack: {value}\n")
    line = path.read_text().splitlines().index(f"pack: {value}") + 1
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"sweep.yaml:{line}: {message}" in err and "Traceback" not in err


def test_packs_with_an_adaptive_search_are_refused_at_validate(tmp_path, capsys):
    pytest.importorskip("optuna")
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n", search="lr: {choice: [0.1, 0.2]}",
                      extra="search_alg: optuna\nnum_samples: 2\npack: 4\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "pack: packs apply to search_alg grid and random; optuna suggests one trial at a time" in err
    assert "set pack: 1 (got 4)" in err


# ------------------------------------------------------------------------------------------------ members as trials


class _Recorder:
    """A Tune callback that records what it is told, as (event, trial id)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def __getattr__(self, event: str):
        if not event.startswith("on_"):
            raise AttributeError(event)
        return lambda iteration, trials, trial=None, **info: self.events.append((event, trial and trial.trial_id))


def test_pack_events_reach_the_callbacks_as_events_of_its_members(tmp_path):
    pytest.importorskip("ray")
    from nada_sweep.sweep.members import MemberEvents

    folders = [tmp_path / "a", tmp_path / "b"]
    members = [TrialSpec(index=i, domain="sketch", name=f.name, out_dir=str(f), steps=4, config={}, labels={})
               for i, f in enumerate(folders)]
    pack = SimpleNamespace(trial_id="t", config={PACK_KEY: PackSpec(index=0, members=members, cpus=1).model_dump()})
    recorder = _Recorder()
    events = MemberEvents([recorder], retried=True)
    events.on_trial_start(0, [pack], pack)
    events.on_trial_result(0, [pack], pack, {MEMBER: 1, "step": 2})
    RunFolder(folders[0]).write_status(status=Status.OK)
    events.on_trial_result(0, [pack], pack, {MEMBER: 0, MEMBER_ENDED: 1})
    RunFolder(folders[1]).write_status(status=Status.FAILED)
    events.on_trial_result(0, [pack], pack, {MEMBER: 1, MEMBER_ENDED: 1})  # settled with its pack, which retries
    events.on_trial_recover(0, [pack], pack)
    events.on_trial_start(0, [pack], pack)  # the retry: the finished member is only replayed, not started again
    events.on_trial_result(0, [pack], pack, {MEMBER: 0, "step": 2})
    events.on_trial_error(0, [pack], pack)
    assert recorder.events == [
        ("on_trial_start", "t.0"), ("on_trial_start", "t.1"), ("on_trial_result", "t.1"),
        ("on_trial_complete", "t.0"), ("on_trial_recover", "t.1"), ("on_trial_start", "t.1"),
        ("on_trial_error", "t.1"),
    ]


# ------------------------------------------------------------------------------------------------ on real Ray


@pytest.mark.slow
def test_packed_members_equal_the_same_trials_unpacked(tmp_path, local_ray):
    roots = {}
    for pack in (1, 4):
        folder = tmp_path / f"pack{pack}"
        folder.mkdir()
        # k = 2: each member selects its own layers too.
        assert main(["run", str(make_sweep(folder, LIGHT_DOMAINS, search="k: [0, 2]", extra=f"pack: {pack}\nmax_concurrent: 1\n"))]) == 0
        roots[pack] = folder / "results" / "tiny"
    assert len(list((roots[4] / "tune").glob("run-*/0000-sketch-k=0+3"))) == 1  # one Tune trial for all four
    alone, packed = _histories(roots[1]), _histories(roots[4])
    assert set(alone) == set(packed) == {"sketch/k=0", "sketch/k=2", "anime/k=0", "anime/k=2"}
    for name, history in alone.items():
        assert [e["step"] for e in history] == [e["step"] for e in packed[name]] == [2, 4]
        for entry_a, entry_p in zip(history, packed[name], strict=True):
            assert set(entry_a) == set(entry_p)
            for key in set(entry_a) - NOT_COMPARED:
                if isinstance(entry_a[key], float):
                    assert math.isclose(entry_a[key], entry_p[key], abs_tol=TOLERANCE), (name, key)
                else:
                    assert entry_a[key] == entry_p[key], (name, key)
        assert statuses(roots[1])[name]["best_step"] == statuses(roots[4])[name]["best_step"]


@pytest.mark.slow
def test_a_member_failing_or_diverging_leaves_its_pack_and_the_others_finish(tmp_path, capsys, local_ray):
    broken = tmp_path / "broken_style"
    broken.mkdir()
    write_undecodable_png(broken / "style.png")  # passes validation, fails when the member decodes it
    path = make_sweep(tmp_path, """\
        - {name: sketch, target: pencil sketch, params: stylespace}
        - {name: broken, target: painting, target_images: broken_style, params: stylespace}
    """, search="lr: [0.05, 1.0e+37]", extra="pack: 4\nretries: 1\nmax_concurrent: 1\n")
    code = main(["run", str(path)])
    out = capsys.readouterr().out
    root = tmp_path / "results" / "tiny"
    found = statuses(root)

    assert code == 1, out
    assert found["sketch/lr=0.05"]["status"] == "ok"
    assert [e["step"] for e in RunFolder(root / "trials/sketch/lr=0.05").history()] == [2, 4]
    assert found["sketch/lr=1e+37"]["status"] == "diverged" and "try a lower lr" in found["sketch/lr=1e+37"]["error"]
    assert found["broken/lr=0.05"]["status"] == found["broken/lr=1e+37"]["status"] == "failed"
    assert "1/4 trials succeeded, 3 failed" in out
    # Tune retried the pack once: the finished member was not trained again (and counted once), the failed ones
    # were retried and failed for good.
    assert out.count("done    sketch/lr=0.05") == 1 and out.count("start   sketch/lr=0.05") == 1
    assert "retry   broken/lr=0.05 after an error" in out
    assert "FAILED  broken/lr=0.05" in out and "FAILED  sketch/lr=1e+37" in out


@pytest.mark.slow
def test_early_stopping_stops_members_inside_a_pack_within_their_domain(tmp_path, capsys, local_ray):
    # In each domain the member at lr 1e-7 barely moves: behind its domain's first member at the first rung.
    domains = """\
        - {name: sketch, target: pencil sketch, params: stylespace}
        - {name: anime, target: anime painting, params: stylespace}
    """
    path = make_sweep(tmp_path, domains, search="lr: [0.05, 1.0e-7]",
                      extra="pack: 4\nmax_concurrent: 1\nearly_stopping: {grace_steps: 2, reduction_factor: 2}\n")
    assert main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    root = tmp_path / "results" / "tiny"
    found = statuses(root)
    for domain in ("sketch", "anime"):
        stopped, kept = found[f"{domain}/lr=1e-07"], found[f"{domain}/lr=0.05"]
        assert stopped["status"] == "stopped" and stopped["step"] == 2, stopped
        assert stopped["reason"] == "early stopping: clip_direction behind the other trials of its domain"
        assert len(RunFolder(root / f"trials/{domain}/lr=1e-07").history()) == 1
        # The pack went on with the rest: the domain's first member trained its whole budget.
        assert kept["status"] == "ok" and [e["step"] for e in RunFolder(root / f"trials/{domain}/lr=0.05").history()
                                            ] == [2, 4]
        assert f"stopped {domain}/lr=1e-07 early at step 2" in out
    assert "4/4 trials succeeded" in out


@pytest.mark.slow
def test_ctrl_c_during_a_packed_sweep_then_resume_reruns_no_finished_member(tmp_path, local_ray):
    domain = "- {name: sketch, target: pencil sketch, params: stylespace}\n"
    path = make_sweep(tmp_path, domain, eval_every=4, search="steps: [4, 28]",
                      extra="pack: 2\nmax_concurrent: 1\n")
    root = tmp_path / "results" / "tiny"
    short, long = root / "trials/sketch/steps=4", root / "trials/sketch/steps=28"
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        driver = subprocess.Popen([*CLI, "run", str(path)], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for(lambda: lock_owner(root) == driver.pid or driver.poll() is not None, 120, "the run's lock")
        wait_for(lambda: driver.poll() is not None or (status(short) == "ok" and (long / "state.pt").is_file()),
                 240, "one member finished and the other checkpointed")
        assert driver.poll() is None, log.read_text()
        os.killpg(driver.pid, signal.SIGINT)
        code = driver.wait(timeout=180)
    finally:
        leftovers = end_session(driver)
    output = log.read_text()

    assert code == 130, output
    assert leftovers == [], "Ray processes outlived the interrupted run"
    assert status(short) == "ok"
    assert status(long) == "interrupted" and (long / "state.pt").is_file()
    finished = snapshot(short)
    first_evals = (long / "metrics.jsonl").read_text().splitlines()
    assert first_evals

    assert main(["run", str(path)]) == 0
    assert {s["status"] for s in statuses(root).values()} == {"ok"}
    assert snapshot(short) == finished  # the finished member was not rerun: not one of its files was rewritten
    resumed = (long / "metrics.jsonl").read_text().splitlines()
    assert resumed[: len(first_evals)] == first_evals  # continued from its own checkpoint, not restarted
    assert [json.loads(text)["step"] for text in resumed] == list(range(4, 29, 4))  # no eval lost or repeated


def test_long_domains_share_packs_and_packs_fill_the_workers_in_whole_rounds():
    from nada_sweep.adapt.settings import AdaptConfig
    from nada_sweep.sweep.packs import group_packs

    # 20 light trials, a domain each, the odd ones 200 steps and the even ones 20, 8 a pack, 2 packs at once:
    # 4 packs of 5 (not 7, 7 and 6, whose third would train alone), the long domains in the first two packs.
    base = AdaptConfig(generator="builtin:tiny", clip=[{"name": "builtin:tiny"}], source="photo", target="sketch",
                       params="stylespace")
    configs = [base.model_copy(update={"steps": 200 if i % 2 else 20}) for i in range(20)]
    packs = group_packs(configs, [f"d{i}" for i in range(20)], size=8, at_once=2)
    assert [len(pack) for pack in packs] == [5, 5, 5, 5]
    assert {configs[i].steps for pack in packs[:2] for i in pack} == {200}
    assert sorted(i for pack in packs for i in pack) == list(range(20))
    # A domain's trials stay in one pack whatever their lengths.
    packs = group_packs(configs[:4], ["a", "b", "a", "b"], size=2, at_once=1)
    assert sorted(sorted(pack) for pack in packs) == [[0, 2], [1, 3]]
