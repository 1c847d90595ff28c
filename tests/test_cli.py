"""The CLI as a user runs it: adapt, generate, and one clean message with exit code 2 for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nada_sweep.cli import main

TINY = ["--generator", "builtin:tiny", "--clip", "builtin:tiny", "--source", "photo", "--device", "cpu",
        "--steps", "4", "--eval-every", "2", "--n-eval", "4", "--n-samples", "2"]


def test_adapt_then_generate_end_to_end(tmp_path):
    out = tmp_path / "sketch"
    done = subprocess.run(
        [sys.executable, "-m", "nada_sweep.cli", "adapt", *TINY, "--target", "sketch", "--out", str(out)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "RANDOM-WEIGHT" in done.stdout
    assert (out / "generator.pt").exists() and (out / "samples" / "step_000004.png").exists()

    grid = tmp_path / "grid.png"
    assert main(["generate", str(out / "generator.pt"), "--n", "4", "--seed", "0", "--truncation", "0.7",
                 "--out", str(grid)]) == 0
    image = Image.open(grid)
    assert image.size[0] == image.size[1] > 64  # 2 x 2 grid of 64 px images plus padding


def test_finished_run_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["adapt", *TINY, "--target", "sketch", "--out", str(out)]) == 0
    before = (out / "generator.pt").stat().st_mtime_ns
    assert main(["adapt", *TINY, "--target", "sketch", "--out", str(out)]) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert (out / "generator.pt").stat().st_mtime_ns == before
    assert main(["adapt", *TINY, "--target", "sketch", "--out", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "steps"),
        (["--lr", "-1"], "lr"),
        (["--target", ""], "target"),
        (["--target", "very " * 80], "target"),
        (["--k", "99"], "k: larger than the generator's n_latent"),
        (["--clip", "ViT-Nope/1"], "ViT-Nope/1"),
        (["--generator", "missing.pt"], "missing.pt"),
        (["--clip", "builtin:tiny=abc"], "abc"),
    ],
)
def test_bad_input_is_one_clear_message(tmp_path, capsys, args, message):
    argv = ["adapt", *TINY, "--target", "sketch", "--out", str(tmp_path / "run"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["adapt", "--help"])
    text = capsys.readouterr().out
    for option in ("--k", "--layer-map", "--lambda-patch", "--eval-every", "--overwrite", "--clip"):
        assert option in text
    assert "default: 300" in text  # steps


def test_non_run_folder_is_not_touched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["adapt", *TINY, "--target", "sketch", "--out", str(out)]) == 2
    assert (out / "precious.txt").read_text() == "keep me"
    assert sorted(p.name for p in Path(out).iterdir()) == ["precious.txt"]
