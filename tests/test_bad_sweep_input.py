"""Bad sweep files and catalogs that used to end in a traceback or pass `validate` (issue 13), driven through the
real command line: each ends in exit code 2 with one message line naming file, line, field and value, and
leaves every file as it was -- for `validate` and for `run` alike.

The classes: non-finite numbers, characters YAML refuses, alias bombs, symlink loops, output folders that cannot
be used, names ending in a newline, style images that are not images, randint on a float setting, messages that
pointed at the wrong place or quoted a huge value, and files a refused `run` used to write.
"""

from __future__ import annotations

import hashlib
import io
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from sweep_helpers import make_sweep

from nada_sweep import run_files
from nada_sweep.cli import main
from nada_sweep.errors import MAX_QUOTED
from nada_sweep.run_files import SweepFolder
from nada_sweep.sweep.load import load_sweep
from nada_sweep.sweep.yaml_doc import MAX_ALIASED_VALUES

CATALOG = """\
source: photo
domains:
  - {name: sketch, target: pencil sketch}
"""

SWEEP = """\
name: test
generator: builtin:tiny
clip: [builtin:tiny]
catalog: catalog.yaml
train:
  steps: 4
  eval_every: 2
"""

Setup = Callable[[Path], None]


def write(folder: Path, sweep: str = SWEEP, catalog: str = CATALOG) -> Path:
    (folder / "catalog.yaml").write_text(catalog)
    path = folder / "sweep.yaml"
    path.write_text(sweep)
    return path


def tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` with what it is (a file's content hash, a link's target): equal trees mean
    nothing was created, removed or rewritten."""
    found = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = "-> " + os.readlink(path)
        elif path.is_dir():
            found[key] = "folder"
        else:
            found[key] = hashlib.sha256(path.read_bytes()).hexdigest() + f" {path.stat().st_mtime_ns}"
    return found


def refused(capsys, folder: Path, *argv: str, one_line: bool = True) -> str:
    """Run the CLI; assert exit code 2, one message (one line unless not `one_line`), no traceback and nothing
    written under `folder`. Returns the message (without its "nada-sweep: error: " prefix).
    """
    before = tree(folder)
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("nada-sweep: error: ")]
    assert len(errors) == 1, err
    message = err[err.index("nada-sweep: error: "):].strip()
    assert "\n" not in message or not one_line, f"more than one line: {message!r}"
    assert tree(folder) == before, "a refused command wrote files"
    return message.removeprefix("nada-sweep: error: ")


def check(capsys, tmp_path: Path, command: str, sweep: str, catalog: str, fragments: list[str],
          setup: Setup | None = None, *extra: str) -> str:
    path = write(tmp_path, sweep, catalog)
    if setup:
        setup(tmp_path)
    message = refused(capsys, tmp_path, command, str(path), *extra)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def with_train(line: str) -> str:
    return SWEEP + f"  {line}\n"


def with_domain(entry: str) -> str:
    return CATALOG + f"  - {entry}\n"


COMMANDS = ["validate", "run"]


# ------------------------------------------------------------------------------------------ non-finite numbers

NON_FINITE = [
    ("lr", with_train("lr: .inf"), CATALOG, ["sweep.yaml:8", "train.lr", "finite", "(got inf)"]),
    ("lr written as 1e999", with_train("lr: 1e999"), CATALOG, ["sweep.yaml:8", "train.lr", "(got inf)"]),
    ("loss weight nan", with_train("lambda_global: .nan"), CATALOG, ["sweep.yaml:8", "train.lambda_global", "nan"]),
    ("mapper lr", with_train("mapper: {lr: .inf}"), CATALOG, ["sweep.yaml:8", "train.mapper.lr", "(got inf)"]),
    ("cpus", SWEEP + "resources: {cpus: .inf}\n", CATALOG, ["sweep.yaml:8", "resources.cpus", "(got inf)"]),
    ("gpus", SWEEP + "resources: {gpus: .nan}\n", CATALOG, ["sweep.yaml:8", "resources.gpus", "(got nan)"]),
    ("reduction factor", SWEEP + "early_stopping: {reduction_factor: .inf}\n", CATALOG,
     ["sweep.yaml:8", "early_stopping.reduction_factor", "(got inf)"]),
    ("clip weight", SWEEP.replace("[builtin:tiny]", "[{name: builtin:tiny, weight: .inf}]"), CATALOG,
     ["sweep.yaml:3", "clip[0].weight", "(got inf)"]),
    ("lr table", SWEEP + "lr_by_params: {stylespace: .inf}\n", CATALOG,
     ["sweep.yaml:8", "lr_by_params.stylespace", "(got inf)"]),
    ("collapse threshold", SWEEP + "collapse_threshold: .nan\n", CATALOG, ["sweep.yaml:8", "collapse_threshold"]),
    ("domain override", SWEEP, with_domain("{name: x, target: y, lambda_direction: .inf}"),
     ["catalog.yaml:4", "domains[1].lambda_direction", "(got inf)"]),
    ("grid value", SWEEP + "search:\n  lr: [0.002, .inf]\n", CATALOG, ["sweep.yaml:9", "search.lr[1]", "(got inf)"]),
    ("choice value", SWEEP + "search:\n  mixing: {choice: [0.5, .nan]}\n", CATALOG,
     ["sweep.yaml:9", "search.mixing.choice[1]", "(got nan)"]),
    ("range bound", SWEEP + "search:\n  lr: {uniform: [0.001, .inf]}\n", CATALOG,
     ["sweep.yaml:9", "search.lr.uniform", "finite"]),
    ("demo train", SWEEP + "demo:\n  train: {sample_truncation: .nan}\n", CATALOG,
     ["sweep.yaml:9", "demo.train.sample_truncation"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("sweep", "catalog", "fragments"), [case[1:] for case in NON_FINITE],
                         ids=[case[0] for case in NON_FINITE])
def test_non_finite_numbers_are_refused(tmp_path, capsys, command, sweep, catalog, fragments):
    check(capsys, tmp_path, command, sweep, catalog, fragments)


def test_demo_resources_must_be_finite_too(tmp_path, capsys):
    sweep = SWEEP + "demo:\n  resources: {cpus: .inf}\n"
    check(capsys, tmp_path, "validate", sweep, CATALOG, ["sweep.yaml:9", "demo.resources.cpus", "(got inf)"],
          None, "--demo")


def test_adapt_refuses_a_non_finite_lr_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "run"
    message = refused(capsys, tmp_path, "adapt", "--generator", "builtin:tiny", "--clip", "builtin:tiny",
                      "--target", "sketch", "--lr", "inf", "--out", str(out))
    assert message == "command line: --lr: Input should be a finite number (got inf)"
    assert not out.exists()


# ------------------------------------------------------------------------------- characters YAML refuses

CHARACTERS = [
    ("NUL in a sweep comment", SWEEP.replace("clip:", "# a\x00b\nclip:"), CATALOG, ["sweep.yaml:3", r"'\x00'"]),
    ("escape in the sweep name", SWEEP.replace("name: test", "name: te\x1bst"), CATALOG, ["sweep.yaml:1", r"'\x1b'"]),
    ("control character in a catalog prompt", SWEEP, with_domain('{name: x, target: "a\x01b"}'),
     ["catalog.yaml:4", r"'\x01'"]),
    ("DEL in the catalog source", SWEEP, CATALOG.replace("source: photo", "source: pho\x7fto"),
     ["catalog.yaml:1", r"'\x7f'"]),
    ("backspace in a key", with_train("st\x08eps: 3"), CATALOG, ["sweep.yaml:8", r"'\x08'"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("sweep", "catalog", "fragments"), [case[1:] for case in CHARACTERS],
                         ids=[case[0] for case in CHARACTERS])
def test_characters_yaml_refuses_are_located(tmp_path, capsys, command, sweep, catalog, fragments):
    message = check(capsys, tmp_path, command, sweep, catalog, fragments)
    assert "YAML does not allow the character" in message and "control character" in message


# ------------------------------------------------------------------------------------------------ alias bombs


def laughs(levels: int = 9, width: int = 9, mapping: bool = False) -> list[str]:
    """YAML items, each aliasing the one before `width` times: `width ** levels` values from a few lines."""
    if mapping:
        items = ["&l0 {" + ", ".join(f"k{i}: lol" for i in range(width)) + "}"]
        items += [f"&l{n} {{" + ", ".join(f"k{i}: *l{n - 1}" for i in range(width)) + "}" for n in range(1, levels)]
    else:
        items = ["&l0 [" + ", ".join(["lol"] * width) + "]"]
        items += [f"&l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]" for n in range(1, levels)]
    return [f"  - {item}" for item in items]


BOMB = "\n".join(laughs())
ALIAS_BOMBS = [
    ("under an unknown key", SWEEP + "lol:\n" + BOMB + "\n", CATALOG, ["sweep.yaml:8", "lol:"]),
    ("as search values", SWEEP + "search:\n  k:\n" + "\n".join("  " + item for item in laughs()) + "\n", CATALOG,
     ["sweep.yaml:8", "search:"]),
    ("of mappings", SWEEP + "train_blocks:\n" + "\n".join(laughs(mapping=True)) + "\n", CATALOG,
     ["sweep.yaml:8", "train_blocks:"]),
    ("in the catalog", SWEEP, CATALOG + "lol:\n" + BOMB + "\n", ["catalog.yaml:4", "lol:"]),
    ("just over the limit", SWEEP + "lol:\n" + "\n".join(laughs(levels=2, width=int(MAX_ALIASED_VALUES ** 0.5) + 2))
     + "\n", CATALOG, ["sweep.yaml:8"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("sweep", "catalog", "fragments"), [case[1:] for case in ALIAS_BOMBS],
                         ids=[case[0] for case in ALIAS_BOMBS])
def test_alias_bombs_are_refused_without_expanding_them(tmp_path, capsys, command, sweep, catalog, fragments):
    message = check(capsys, tmp_path, command, sweep, catalog, fragments)
    assert "alias bomb" in message and f"more than {MAX_ALIASED_VALUES:,} added values" in message


def test_ordinary_aliases_still_work(tmp_path):
    catalog = textwrap.dedent("""\
        source: photo
        domains:
          - {name: sketch, target: pencil sketch, <<: &shared {lambda_global: 0.5, lambda_manifold: 0.25}}
          - {name: anime, target: anime painting, <<: *shared}
    """)
    sweep = load_sweep(write(tmp_path, SWEEP + "search:\n  lr: &lrs [0.001, 0.002]\ndemo:\n  search: {lr: *lrs}\n",
                             catalog), demo=True)
    assert len(sweep.trials) == 4
    assert [(d.settings["lambda_global"], d.settings["lambda_manifold"]) for d in sweep.domains] == [(0.5, 0.25)] * 2


def test_deep_nesting_is_refused(tmp_path, capsys):
    message = check(capsys, tmp_path, "validate", SWEEP + "search: " + "[" * 5000 + "]" * 5000 + "\n", CATALOG,
                    ["sweep.yaml", "nested too deeply"])
    assert "RecursionError" not in message


# ------------------------------------------------------------------------------------------------ symlink loops


def loop(name: str) -> Setup:
    def make(folder: Path) -> None:
        (folder / name).symlink_to(f"{name}.other")
        (folder / f"{name}.other").symlink_to(name)
    return make


SYMLINK_LOOPS = [
    ("catalog", SWEEP.replace("catalog: catalog.yaml", "catalog: looped.yaml"), CATALOG, loop("looped.yaml"),
     ["sweep.yaml:4", "catalog", "symlink loop", "looped.yaml"]),
    ("generator", SWEEP.replace("generator: builtin:tiny", "generator: looped.pt"), CATALOG, loop("looped.pt"),
     ["sweep.yaml:2", "generator", "symlink loop", "looped.pt"]),
    ("target_images", SWEEP, with_domain("{name: x, target: y, target_images: looped}"), loop("looped"),
     ["catalog.yaml:4", "domains[1].target_images", "symlink loop"]),
    ("weights_dir of a preset", SWEEP.replace("generator: builtin:tiny", "generator: ffhq") + "weights_dir: w\n",
     CATALOG, loop("w"), ["sweep.yaml:2", "weights_dir", "symlink loop"]),
    ("clip file", SWEEP.replace("[builtin:tiny]", "[looped.pt]"), CATALOG, loop("looped.pt"),
     ["sweep.yaml:3", "clip[0]", "symlink loop"]),
    ("results_dir", SWEEP + "results_dir: out\n", CATALOG, loop("out"), ["sweep.yaml:8", "results_dir", "symlink loop"]),
    ("storage", SWEEP + "storage: tune\n", CATALOG, loop("tune"), ["sweep.yaml:8", "storage", "symlink loop"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("sweep", "catalog", "setup", "fragments"), [case[1:] for case in SYMLINK_LOOPS],
                         ids=[case[0] for case in SYMLINK_LOOPS])
def test_symlink_loops_are_named(tmp_path, capsys, command, sweep, catalog, setup, fragments):
    check(capsys, tmp_path, command, sweep, catalog, fragments, setup)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_looped_sweep_file_is_named(tmp_path, capsys, command):
    loop("sweep.yaml")(tmp_path)
    message = refused(capsys, tmp_path, command, str(tmp_path / "sweep.yaml"))
    assert message.startswith("sweep file: symlink loop: ") and "sweep.yaml" in message


# ----------------------------------------------------------------------------- output folders that cannot be used


def a_file(name: str) -> Setup:
    return lambda folder: (folder / name).write_text("not a folder\n")


def read_only(name: str) -> Setup:
    def make(folder: Path) -> None:
        (folder / name).mkdir()
        (folder / name).chmod(0o500)
    return make


OUTPUTS = [
    ("results_dir is a file", SWEEP + "results_dir: taken\n", CATALOG, a_file("taken"),
     ["sweep.yaml:8", "results_dir", "taken is a file", "(got 'taken')"]),
    ("results_dir below a file", SWEEP + "results_dir: taken/deeper\n", CATALOG, a_file("taken"),
     ["sweep.yaml:8", "results_dir", "cannot create the folder", "taken is a file"]),
    ("the sweep's folder is a file", SWEEP + "results_dir: out\n", CATALOG,
     lambda folder: ((folder / "out").mkdir(), (folder / "out" / "test").write_text("x")),
     ["sweep.yaml:8", "results_dir", "out/test is a file, expected a folder"]),
    ("storage is a file", SWEEP + "storage: taken\n", CATALOG, a_file("taken"),
     ["sweep.yaml:8", "storage", "taken is a file"]),
    ("results_dir in /proc/self", SWEEP + "results_dir: /proc/self/results\n", CATALOG, None,
     ["sweep.yaml:8", "results_dir", "no permission to write into /proc/"]),
    ("read-only results_dir", SWEEP + "results_dir: locked\n", CATALOG, read_only("locked"),
     ["sweep.yaml:8", "results_dir", "no permission to write into", "locked"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("sweep", "catalog", "setup", "fragments"), [case[1:] for case in OUTPUTS],
                         ids=[case[0] for case in OUTPUTS])
def test_unusable_output_folders_are_refused_before_any_work(tmp_path, capsys, command, sweep, catalog, setup,
                                                              fragments):
    if "locked" in sweep and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    if "/proc/self" in sweep and os.access("/proc/self", os.W_OK):
        pytest.skip("/proc/self is writable here")
    check(capsys, tmp_path, command, sweep, catalog, fragments, setup)


# --------------------------------------------------------------------------------- names ending in a newline

NAMES = [
    ("sweep name", SWEEP.replace("name: test", 'name: "test\\n"'), CATALOG, ["sweep.yaml:1", "name", r"'test\n'"]),
    ("sweep name as a block scalar", SWEEP.replace("name: test", "name: |\n  test"), CATALOG,
     ["sweep.yaml:1", "name", r"'test\n'"]),
    ("domain name", SWEEP, with_domain('{name: "x\\n", target: y}'), ["catalog.yaml:4", "domains[1].name", r"'x\n'"]),
    ("domain name with a carriage return", SWEEP, with_domain('{name: "x\\r", target: y}'),
     ["catalog.yaml:4", r"'x\r'"]),
    ("newline inside a domain name", SWEEP, with_domain('{name: "a\\nb", target: y}'), ["catalog.yaml:4", r"'a\nb'"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("sweep", "catalog", "fragments"), [case[1:] for case in NAMES],
                         ids=[case[0] for case in NAMES])
def test_names_that_become_folders_match_whole(tmp_path, capsys, command, sweep, catalog, fragments):
    message = check(capsys, tmp_path, command, sweep, catalog, fragments)
    assert "must be usable as a folder name" in message


# ------------------------------------------------------------------------------------------- style images


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def style(files: dict[str, bytes]) -> Setup:
    def make(folder: Path) -> None:
        (folder / "style").mkdir()
        for name, data in files.items():
            (folder / "style" / name).write_bytes(data)
    return make


STYLE_DOMAIN = with_domain("{name: x, target_images: style, k: 0}")
STYLE_IMAGES = [
    ("text named .jpg", style({"a.jpg": b"hello, I am text\n"}), ["a.jpg is not a readable image"]),
    ("truncated png", style({"ok.png": png_bytes(), "cut.png": png_bytes()[:40]}), ["cut.png is not a readable"]),
    ("empty png", style({"empty.png": b""}), ["empty.png is not a readable image"]),
    ("random bytes as webp", style({"noise.webp": bytes(range(256)) * 4}), ["noise.webp is not a readable"]),
    ("png with a broken checksum", style({"crc.png": png_bytes()[:-5] + b"\x00\x00\x00\x00\x00"}),
     ["crc.png is not a readable image"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("setup", "fragments"), [case[1:] for case in STYLE_IMAGES],
                         ids=[case[0] for case in STYLE_IMAGES])
def test_style_images_are_opened_by_validate(tmp_path, capsys, command, setup, fragments):
    message = check(capsys, tmp_path, command, SWEEP, STYLE_DOMAIN, ["catalog.yaml:4", "domains[1].target_images",
                                                                     *fragments], setup)
    assert "ok.png" not in message


def test_readable_style_images_pass(tmp_path):
    path = write(tmp_path, SWEEP, STYLE_DOMAIN)
    style({"a.png": png_bytes(), "notes.txt": b"not an image, not a style image either"})(tmp_path)
    assert load_sweep(path).domain("x").target_images == str(tmp_path / "style")


# ------------------------------------------------------------------------------------- randint on a float

RANDINT = [
    ("lr", "lr: {randint: [1, 3]}", ["search.lr.randint", "lr takes any number"]),
    ("mixing", "mixing: {randint: [0, 1]}", ["search.mixing.randint", "use uniform"]),
    ("loss weight", "lambda_global: {randint: [0, 5]}", ["search.lambda_global.randint", "whole ones only"]),
    ("uniform on an int setting", "steps: {uniform: [2, 6]}", ["search.steps.uniform", "use randint"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("search", "fragments"), [case[1:] for case in RANDINT], ids=[case[0] for case in RANDINT])
def test_randint_needs_a_whole_number_setting(tmp_path, capsys, command, search, fragments):
    check(capsys, tmp_path, command, SWEEP + f"search:\n  {search}\n", CATALOG, ["sweep.yaml:9", *fragments])


def test_randint_on_a_whole_number_setting_is_accepted(tmp_path):
    sweep = load_sweep(write(tmp_path, SWEEP + "search:\n  k: {randint: [0, 4]}\nnum_samples: 3\n"))
    assert all(isinstance(trial.params["k"], int) for trial in sweep.trials)


# ------------------------------------------------------------------------------- messages in the right place

MESSAGES = [
    ("train k too large", with_train("k: 11"), CATALOG, None, ["sweep.yaml:8: train.k: larger than", "(got 11)"]),
    ("train k too large, a domain's own k fits", with_train("k: 11"), with_domain("{name: x, target: y, k: 2}"), None,
     ["sweep.yaml:8: train.k", "(got 11)"]),
    ("catalog is a folder", SWEEP.replace("catalog: catalog.yaml", "catalog: domains"), CATALOG,
     lambda folder: (folder / "domains").mkdir(), ["sweep.yaml:4", "domains is a folder, expected a catalog file"]),
    ("generator is a folder", SWEEP.replace("generator: builtin:tiny", "generator: weights"), CATALOG,
     lambda folder: (folder / "weights").mkdir(), ["sweep.yaml:2", "weights is a folder, expected a generator file"]),
    ("preset file is a folder", SWEEP.replace("generator: builtin:tiny", "generator: ffhq"), CATALOG,
     lambda folder: (folder / "weights" / "stylegan2-ffhq-config-f.pt").mkdir(parents=True),
     ["sweep.yaml:2", "preset 'ffhq'", "is a folder, expected a generator file"]),
    ("target_images is a file", SWEEP, with_domain("{name: x, target_images: catalog.yaml, k: 0}"), None,
     ["catalog.yaml:4", "catalog.yaml is a file, expected a folder of style images"]),
    ("clip file is a folder", SWEEP.replace("[builtin:tiny]", "[models]"), CATALOG,
     lambda folder: (folder / "models").mkdir(), ["sweep.yaml:3", "clip[0]", "is a folder, expected a CLIP model"]),
]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("sweep", "catalog", "setup", "fragments"),
                         [case[1:] for case in MESSAGES],
                         ids=[case[0] for case in MESSAGES])
def test_messages_name_the_right_place_and_problem(tmp_path, capsys, command, sweep, catalog, setup, fragments):
    message = check(capsys, tmp_path, command, sweep, catalog, fragments, setup)
    assert "not found" not in message


def test_demo_train_k_is_reported_at_the_sweep_file(tmp_path, capsys):
    sweep = SWEEP + "demo:\n  train: {k: 11}\n"
    message = check(capsys, tmp_path, "validate", sweep, with_domain("{name: x, target: y, k: 2}"),
                    ["sweep.yaml:9: demo.train.k", "(got 11)"], None, "--demo")
    assert "catalog.yaml" not in message


HUGE = 1_000_000  # characters: far past the cap, still quick to parse


def huge(name: str) -> str:
    return name * (HUGE // len(name))


HUGE_VALUES = [
    ("name", SWEEP.replace("name: test", f"name: {huge('x')}"), CATALOG, ["sweep.yaml:1", "name"]),
    ("unknown key", SWEEP + f"? {huge('k')}\n: 1\n", CATALOG, ["sweep.yaml:8", "unknown key"]),
    ("generator path", SWEEP.replace("generator: builtin:tiny", f"generator: {huge('g')}.pt"), CATALOG,
     ["sweep.yaml:2", "generator", "too long"]),
    ("catalog path", SWEEP.replace("catalog: catalog.yaml", f"catalog: {huge('c')}.yaml"), CATALOG,
     ["sweep.yaml:4", "catalog", "too long"]),
    ("blank prompt", SWEEP, with_domain(f"{{name: x, target: '{' ' * HUGE}'}}"), ["catalog.yaml:4", "is empty"]),
    ("long prompt", SWEEP, with_domain(f"{{name: x, target: {huge('word ')}}}"), ["catalog.yaml:4", "CLIP tokens"]),
    ("search setting", SWEEP + f"search:\n  ? {huge('s')}\n  : [1]\n", CATALOG, ["sweep.yaml:9", "unknown setting"]),
    ("clip name", SWEEP.replace("[builtin:tiny]", f"[{huge('v')}]"), CATALOG, ["sweep.yaml:3", "clip[0]"]),
    ("results_dir", SWEEP + f"results_dir: {huge('r')}\n", CATALOG, ["sweep.yaml:8", "results_dir"]),
]


@pytest.mark.parametrize(("sweep", "catalog", "fragments"), [case[1:] for case in HUGE_VALUES],
                         ids=[case[0] for case in HUGE_VALUES])
def test_a_huge_value_is_quoted_cut(tmp_path, capsys, sweep, catalog, fragments):
    message = check(capsys, tmp_path, "validate", sweep, catalog, fragments)
    assert len(message) < 4 * MAX_QUOTED + 600, f"{len(message)} characters"


# ------------------------------------------------------------------------------------- nothing written on refusal


def test_a_refused_rerun_leaves_the_results_and_their_lock_as_they_were(tmp_path, capsys):
    path = make_sweep(tmp_path, "- {name: sketch, target: pencil sketch}\n")
    sweep = load_sweep(path)
    folder = sweep.trial_dir(sweep.trials[0])
    folder.mkdir(parents=True)
    old = sweep.adapt_config(sweep.trials[0]).model_dump(mode="json") | {"steps": 999}
    run_files.write_json(folder / run_files.CONFIG, {"config": old})
    (sweep.results_root / SweepFolder.LOCK).write_text("")  # as an earlier run left it
    message = refused(capsys, tmp_path, "run", str(path), one_line=False)
    assert "holds trials started with other settings" in message and "sketch/k=0: steps changed" in message


def test_a_run_refused_at_load_creates_no_results_folder(tmp_path, capsys):
    refused(capsys, tmp_path, "run", str(write(tmp_path, with_train("lr: .inf"))))
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_demo_gpus_the_cluster_lacks_are_named_where_set_and_nothing_is_written(tmp_path, capsys, local_ray):
    sweep = SWEEP + "demo:\n  resources: {gpus: 1}\n"
    path = write(tmp_path, sweep)
    message = refused(capsys, tmp_path, "run", str(path), "--demo")
    assert message.startswith(f"{path}:9: demo.resources.gpus: each pack asks for 1 GPU but the Ray cluster has")
    assert "--demo" not in message and "set it to 0" in message
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_fresh_refused_for_its_resources_moves_nothing_aside(tmp_path, capsys, local_ray):
    path = write(tmp_path, SWEEP + "resources: {gpus: 1}\n")
    (tmp_path / "results" / "test" / "trials").mkdir(parents=True)
    (tmp_path / "results" / "test" / "trials" / "kept.txt").write_text("an earlier run's results")
    message = refused(capsys, tmp_path, "run", str(path), "--fresh")
    assert message.startswith(f"{path}:8: resources.gpus: each pack asks for 1 GPU") and "--demo" in message
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["test"]
