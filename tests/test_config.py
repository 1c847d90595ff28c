"""The sweep file and catalogs: every bad input is one message naming file, line, field and value (exit code 2).

These run `nada-sweep validate` (no Ray) on files written into a temporary folder.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from nada_sweep.adapt.layers import LAYER_MAPS
from nada_sweep.adapt.settings import LayerMap
from nada_sweep.cli import main
from nada_sweep.errors import UserError
from nada_sweep.models.checkpoints import load_generator, save_generator
from nada_sweep.models.presets import GENERATOR_PRESETS
from nada_sweep.sweep.load import load_sweep

REPO = Path(__file__).resolve().parent.parent

CATALOG = """\
source: photo
domains:
  - {name: sketch, target: pencil sketch}
  - {name: anime, target: anime painting, steps: 4}
"""

SWEEP = """\
name: test
generator: builtin:tiny
clip: [builtin:tiny]
catalog: catalog.yaml
train:
  steps: 6
  eval_every: 3
search:
  k: [0, 4]
"""


def write(folder: Path, sweep: str = SWEEP, catalog: str = CATALOG) -> Path:
    (folder / "catalog.yaml").write_text(textwrap.dedent(catalog))
    path = folder / "sweep.yaml"
    path.write_text(textwrap.dedent(sweep))
    return path


def validate(path: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["validate", str(path), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_sweep_prints_the_trial_table(tmp_path, capsys):
    code, out, err = validate(write(tmp_path), capsys)
    assert code == 0, err
    assert "4 trials = 2 domains x 2 (k: grid 0, 4)" in out
    assert "k=0 (lr 0.002), k=4 (lr 0.002)" in out
    assert "1 CPU, 0 GPU" in out
    assert not (tmp_path / "results").exists()  # validate writes nothing


def test_resolution_merges_defaults_sweep_domain_and_search(tmp_path):
    sweep = load_sweep(write(tmp_path))
    assert [t.name for t in sweep.trials] == ["k=0", "k=4", "k=0", "k=4"]
    configs = {(t.domain, t.name): sweep.adapt_config(t) for t in sweep.trials}
    assert configs["sketch", "k=4"].k == 4 and configs["sketch", "k=4"].steps == 6
    assert configs["anime", "k=0"].steps == 4  # the domain's override beats the sweep's train
    assert configs["anime", "k=0"].batch == 2  # TrainSettings default
    assert configs["sketch", "k=0"].source == "photo"  # the catalog's default source
    assert sweep.results_root == tmp_path / "results" / "test"
    resolved = yaml.safe_load(sweep.to_yaml())
    assert resolved["n_latent"] == 10 and resolved["demo"] is False
    assert [t["dir"] for t in resolved["trials"]][:2] == ["trials/sketch/k=0", "trials/sketch/k=4"]


def test_demo_replaces_models_and_budget_but_keeps_catalog_and_search(tmp_path):
    sweep_text = SWEEP.replace("generator: builtin:tiny", "generator: missing.pt").replace(
        "clip: [builtin:tiny]", "clip: [ViT-B/32, ViT-B/16]"
    )
    path = write(tmp_path, sweep_text)
    with pytest.raises(UserError, match="missing.pt"):
        load_sweep(path)
    demo = load_sweep(path, demo=True)
    assert demo.generator == "builtin:tiny" and [c.name for c in demo.clip] == ["builtin:tiny"]
    assert demo.results_root.name == "test-demo"
    assert len(demo.trials) == 4
    assert all(demo.adapt_config(t).steps == 20 for t in demo.trials)  # the demo budget wins over domains
    assert "# DEMO" in demo.to_yaml()


def test_random_search_is_reproducible_and_named(tmp_path):
    sweep_text = SWEEP.replace("  k: [0, 4]", "  k: [0, 4]\n  lr: {loguniform: [0.001, 0.01]}") + "num_samples: 2\n"
    path = write(tmp_path, sweep_text)
    first, second = load_sweep(path), load_sweep(path)
    assert len(first.trials) == 2 * 2 * 2
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert all(0.001 <= t.params["lr"] <= 0.01 for t in first.trials)
    assert len({(t.domain, t.name) for t in first.trials}) == len(first.trials)
    assert first.trials[0].name.startswith("k=0_lr=") and first.trials[0].name.endswith("_r0")
    seeds = {first.adapt_config(t).seed for t in first.trials}
    assert seeds == {0, 1}  # each repeat gets its own training seed


def test_repository_sweep_and_catalogs_are_valid(tmp_path, capsys):
    code, out, err = validate(REPO / "sweep.yaml", capsys, "--demo")
    assert code == 0, err
    assert "80 trials = 20 domains x 4 (params: grid full, stylespace; k: grid 0, 4)" in out
    assert "DEMO" in out
    # Without the FFHQ weights the real sweep names the missing file and points at --demo.
    code, out, err = validate(REPO / "sweep.yaml", capsys)
    assert code == 2
    assert GENERATOR_PRESETS["ffhq"] in err and "--demo" in err
    for catalog in sorted((REPO / "domains").glob("*.yaml")):
        path = write(tmp_path, SWEEP.replace("catalog.yaml", str(catalog)))
        assert load_sweep(path).domains, catalog


BAD_INPUTS = [
    # (what, sweep text, catalog text, expected fragments of the message)
    ("yaml syntax", SWEEP.replace("train:\n", "train:\n steps: [\n"), CATALOG,
     ["sweep.yaml:8", "YAML syntax error", "flow sequence on line 6"]),
    ("missing catalog", SWEEP.replace("catalog.yaml", "nope.yaml"), CATALOG, ["sweep.yaml:4", "catalog", "nope.yaml"]),
    ("empty catalog", SWEEP, "", ["catalog.yaml", "empty"]),
    ("catalog without domains", SWEEP, "source: photo\ndomains: []\n", ["catalog.yaml", "empty"]),
    ("duplicate names", SWEEP, CATALOG + "  - {name: Sketch, target: x}\n",
     ["catalog.yaml:5", "domains[2].name", "duplicate", "'Sketch'"]),
    ("unsafe name", SWEEP, CATALOG + "  - {name: ../up, target: x}\n", ["catalog.yaml:5", "folder name", "'../up'"]),
    ("unsafe sweep name", SWEEP.replace("name: test", "name: ../../elsewhere"), CATALOG,
     ["sweep.yaml:1", "name", "folder name", "'../../elsewhere'"]),
    ("unknown key", SWEEP.replace("  steps: 6", "  stesp: 6"), CATALOG,
     ["sweep.yaml:6", "train.stesp", "did you mean 'steps'"]),
    ("unknown top key", SWEEP + "retires: 2\n", CATALOG, ["sweep.yaml:10", "retires", "did you mean 'retries'"]),
    ("unknown domain key", SWEEP, CATALOG + "  - {name: x, target: y, lamda_global: 1}\n",
     ["catalog.yaml:5", "lamda_global", "did you mean 'lambda_global'"]),
    ("wrong type", SWEEP.replace("steps: 6", "steps: many"), CATALOG, ["sweep.yaml:6", "train.steps", "'many'"]),
    ("zero steps", SWEEP.replace("steps: 6", "steps: 0"), CATALOG, ["sweep.yaml:6", "train.steps", "greater than 0"]),
    ("negative lr", SWEEP, CATALOG + "  - {name: x, target: y, lr: -0.1}\n", ["catalog.yaml:5", "lr", "-0.1"]),
    ("zero batch", SWEEP.replace("  steps: 6", "  batch: 0"), CATALOG, ["train.batch", "greater than 0", "(got 0)"]),
    ("k out of range", SWEEP.replace("k: [0, 4]", "k: [0, 11]"), CATALOG, ["sweep.yaml:9", "n_latent (10", "(got 11)"]),
    ("domain k out of range", SWEEP.replace("k: [0, 4]", "lr: [0.002]"), CATALOG + "  - {name: x, target: y, k: 18}\n",
     ["catalog.yaml:5", "domains[2].k", "n_latent"]),
    ("empty prompt", SWEEP, CATALOG + "  - {name: x, target: ''}\n", ["catalog.yaml:5", "target", "empty"]),
    ("long prompt", SWEEP, CATALOG + "  - {name: x, target: " + "word " * 70 + "}\n",
     ["catalog.yaml:5", "domains[2].target", "CLIP tokens"]),
    ("inverted range", SWEEP.replace("k: [0, 4]", "lr: {loguniform: [0.01, 0.001]}"), CATALOG,
     ["sweep.yaml:9", "search.lr.loguniform", "low 0.01 is above high 0.001"]),
    ("zero trials", SWEEP.replace("k: [0, 4]", "k: []"), CATALOG, ["sweep.yaml:9", "search.k", "zero trials"]),
    ("zero samples", SWEEP + "num_samples: 0\n", CATALOG, ["num_samples", "(got 0)"]),
    ("search and domain override", SWEEP, CATALOG + "  - {name: x, target: y, k: 2}\n",
     ["catalog.yaml:5", "searched by the sweep", "sweep.yaml:9"]),
    ("unknown search setting", SWEEP.replace("k: [0, 4]", "kk: [0, 4]"), CATALOG, ["search.kk", "did you mean 'k'"]),
    ("uniform over an integer", SWEEP.replace("k: [0, 4]", "k: {uniform: [0, 4]}"), CATALOG, ["randint"]),
    ("unknown clip", SWEEP.replace("[builtin:tiny]", "[ViT-B/33]"), CATALOG, ["sweep.yaml:3", "clip[0]", "ViT-B/33"]),
    ("missing generator", SWEEP.replace("builtin:tiny\nclip", "gen.pt\nclip"), CATALOG, ["gen.pt", "not found"]),
    ("fractional gpus above one", SWEEP + "resources: {gpus: 1.5}\n", CATALOG, ["resources.gpus", "1.5"]),
    ("gpus above one", SWEEP + "resources: {gpus: 2}\n", CATALOG, ["resources.gpus", "at most 1", "sit idle"]),
    ("compile with layer selection", SWEEP.replace("  steps: 6", "  steps: 6\n  compile: true"), CATALOG,
     ["search.k", "trial sketch/k=4", "compile: true cannot be combined with adaptive layer selection",
      "recompile limit"]),
    ("missing target", SWEEP, CATALOG + "  - {name: x}\n", ["catalog.yaml:5", "target"]),
    ("missing target images", SWEEP, CATALOG + "  - {name: x, target_images: nowhere}\n", ["nowhere", "not found"]),
    ("duplicate key", SWEEP + "name: again\n", CATALOG, ["sweep.yaml:10", "duplicate key", "line 1"]),
    ("search breaks a cross-field rule", SWEEP.replace("k: [0, 4]", "n_samples: [4, 40]"), CATALOG,
     ["sweep.yaml:9", "trial sketch/n_samples=40", "must not exceed n_eval"]),
]


@pytest.mark.parametrize(("sweep", "catalog", "fragments"), [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_clear_message_and_exit_code_2(tmp_path, capsys, sweep, catalog, fragments):
    code, out, err = validate(write(tmp_path, sweep, catalog), capsys)
    assert code == 2
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_all_problems_of_a_file_are_reported_together(tmp_path, capsys):
    sweep = SWEEP.replace("steps: 6", "steps: -1").replace("eval_every: 3", "eval_every: 0") + "retries: -2\n"
    code, out, err = validate(write(tmp_path, sweep), capsys)
    assert code == 2
    assert "train.steps" in err and "train.eval_every" in err and "retries" in err


def test_lr_in_exponent_notation_is_a_number(tmp_path):
    # YAML 1.1 reads 2e-3 as a string; users write it that way all the time.
    sweep = load_sweep(write(tmp_path, SWEEP.replace("eval_every: 3", "eval_every: 3\n  lr: 2e-3")))
    assert sweep.adapt_config(sweep.trials[0]).lr == pytest.approx(0.002)


def test_layer_selection_needs_a_target_text(tmp_path, capsys):
    (tmp_path / "style").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "style" / "ref.png")
    catalog = CATALOG + "  - {name: styled, target_images: style}\n"
    code, out, err = validate(write(tmp_path, SWEEP, catalog), capsys)
    assert code == 2 and "Traceback" not in err
    assert "catalog.yaml:5" in err and "adaptive layer selection (k > 0) needs a `target` text" in err
    # Without the W+ search (auto_layer_iters 0) k only caps the trained indices: no text needed.
    no_search = SWEEP.replace("eval_every: 3", "eval_every: 3\n  auto_layer_iters: 0")
    code, out, err = validate(write(tmp_path, no_search, catalog), capsys)
    assert code == 0, err


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _truncated(folder: Path) -> Path:
    path = folder / "truncated.pt"
    save_generator(path, load_generator("builtin:tiny").generator)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _wrong_kind(folder: Path) -> Path:
    path = folder / "classifier.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, path)
    return path


def _runs_code(folder: Path) -> Path:
    path = folder / "malicious.pt"
    torch.save({"g_ema": _RunsCode(folder / "pwned")}, path)
    return path


@pytest.mark.parametrize(("make", "message"), [
    (_truncated, "truncated or corrupt"),
    (_wrong_kind, "'style.1.weight'"),
    (_runs_code, "refused: unpickling it needs arbitrary code execution"),
], ids=["truncated", "wrong-kind", "runs-code"])
def test_bad_generator_file_is_refused_before_anything_runs(tmp_path, capsys, make, message):
    generator = make(tmp_path)
    sweep = write(tmp_path, SWEEP.replace("builtin:tiny\nclip", f"{generator.name}\nclip"))
    code, out, err = validate(sweep, capsys)
    assert code == 2 and "Traceback" not in err
    assert f"sweep.yaml:2: generator: {generator}: " in err and message in err
    grid = tmp_path / "grid.png"
    assert main(["generate", str(generator), "--out", str(grid)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not grid.exists()
    assert not (tmp_path / "pwned").exists()  # the pickle's code never ran


@pytest.mark.parametrize("given", ["driven", "true", "'true'", "reference"])
def test_layer_map_is_named_driven_and_true_stays_an_alias(tmp_path, given):
    sweep = SWEEP.replace("train:\n", f"train:\n  layer_map: {given}\n")
    resolved = load_sweep(write(tmp_path, sweep))
    expected = "reference" if given == "reference" else "driven"
    assert {resolved.adapt_config(t).layer_map for t in resolved.trials} == {expected}


def test_layer_map_searched_with_the_yaml_boolean_alias(tmp_path):
    sweep = SWEEP.replace("search:\n", "search:\n  layer_map: [true, reference]\n")
    resolved = load_sweep(write(tmp_path, sweep))
    assert {resolved.adapt_config(t).layer_map for t in resolved.trials} == {"driven", "reference"}


def test_every_layer_map_name_has_a_map():
    from typing import get_args

    assert set(LAYER_MAPS) == set(get_args(get_args(LayerMap)[0]))
