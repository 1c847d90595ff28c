"""Searching `params`: each trial's lr comes from its parametrization unless one is given; validate shows it."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from test_config import CATALOG, SWEEP, validate, write

from nada_sweep.adapt.settings import LR_BY_PARAMS
from nada_sweep.sweep.load import load_sweep

SEARCH_PARAMS = SWEEP.replace("  k: [0, 4]", "  params: [full, stylespace, domain_mod]")


def lrs(sweep):
    return {(t.domain, t.name): sweep.adapt_config(t).lr for t in sweep.trials}


def test_each_parametrization_trains_at_its_own_lr_and_validate_says_which(tmp_path, capsys):
    path = write(tmp_path, SEARCH_PARAMS)
    sweep = load_sweep(path)
    assert lrs(sweep)["sketch", "params=full"] == LR_BY_PARAMS["full"] == 0.002
    assert lrs(sweep)["sketch", "params=stylespace"] == 0.05
    assert lrs(sweep)["anime", "params=domain_mod"] == 0.1
    resolved = yaml.safe_load(sweep.to_yaml())
    assert {t["trial"]: t["lr"] for t in resolved["trials"] if t["domain"] == "sketch"} == {
        "params=full": 0.002, "params=stylespace": 0.05, "params=domain_mod": 0.1}
    assert resolved["lr_by_params"]["stylespace"] == 0.05
    code, out, err = validate(path, capsys)
    assert code == 0, err
    assert "params=full (lr 0.002)" in out and "params=stylespace (lr 0.05" in out
    assert "params=domain_mod (lr 0.1" in out


def test_the_table_can_be_changed_and_a_given_lr_wins(tmp_path):
    table = write(tmp_path, SEARCH_PARAMS + "lr_by_params: {stylespace: 0.03}\n")
    assert lrs(load_sweep(table))["sketch", "params=stylespace"] == 0.03
    assert lrs(load_sweep(table))["sketch", "params=full"] == 0.002  # modes left out keep their default
    given = write(tmp_path, SEARCH_PARAMS.replace("  steps: 6\n", "  steps: 6\n  lr: 0.01\n"))
    assert set(lrs(load_sweep(given)).values()) == {0.01}
    per_domain = write(tmp_path, SEARCH_PARAMS, CATALOG.replace("steps: 4}", "steps: 4, lr: 0.007}"))
    values = lrs(load_sweep(per_domain))
    assert values["anime", "params=stylespace"] == 0.007 and values["sketch", "params=stylespace"] == 0.05
    searched = write(tmp_path, SEARCH_PARAMS + "  lr: [0.2]\n")
    assert set(lrs(load_sweep(searched)).values()) == {0.2}


def test_the_demo_has_its_own_table(tmp_path):
    demo = load_sweep(write(tmp_path, SEARCH_PARAMS), demo=True)
    values = lrs(demo)
    assert values["sketch", "params=full"] == 0.02 and values["sketch", "params=stylespace"] == 0.05
    changed = write(tmp_path, SEARCH_PARAMS + "demo:\n  lr_by_params: {full: 0.01}\n")
    assert lrs(load_sweep(changed, demo=True))["sketch", "params=full"] == 0.01


@pytest.mark.parametrize(("sweep", "fragments"), [
    (SWEEP.replace("  k: [0, 4]", "  params: [full, stylespaces]"),
     ["sweep.yaml:", "search.params", "stylespaces", "'full'", "'stylespace'", "'domain_mod'", "'affine'"]),
    (SWEEP + "lr_by_params: {styles: 0.05}\n", ["sweep.yaml:", "lr_by_params", "styles"]),
    (SWEEP + "lr_by_params: {stylespace: -1}\n", ["sweep.yaml:", "lr_by_params.stylespace", "greater than 0"]),
])
def test_bad_params_input_is_one_message_and_exit_code_2(sweep, fragments, tmp_path, capsys):
    code, _, err = validate(write(tmp_path, sweep), capsys)
    assert code == 2
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "results").exists()
    assert re.search(r"sweep\.yaml:\d+", err)


@pytest.mark.parametrize(("extra", "lr"), [(["--params", "stylespace"], 0.05), (["--params", "stylespace", "--lr",
                                                                                    "0.01"], 0.01), ([], 0.002)])
def test_adapt_uses_the_table_unless_lr_is_given(extra, lr, tmp_path):
    from nada_sweep.cli import main

    out = tmp_path / "run"
    assert main(["adapt", "--generator", "builtin:tiny", "--clip", "builtin:tiny", "--target", "sketch", "--steps", "1",
                 "--eval-every", "1", "--n-eval", "2", "--n-samples", "2", "--device", "cpu", "--out", str(out),
                 *extra]) == 0
    assert json.loads((out / "config.json").read_text())["config"]["lr"] == lr
