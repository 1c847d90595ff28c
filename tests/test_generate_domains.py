"""`nada-sweep generate --domain`: a domain.pt on its base renders what the folded generator.pt renders."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from test_domains import trained
from test_stylegan2 import small_generator

from nada_sweep.adapt.domains import base_identity, domain_of, save_domain
from nada_sweep.cli import main
from nada_sweep.models.checkpoints import save_generator


@pytest.fixture
def files(tmp_path):
    base = tmp_path / "base.pt"
    save_generator(base, small_generator(seed=0))
    made = {"base": base}
    for name, seed in (("a", 1), ("b", 2)):
        params = trained("stylespace", base, seed=seed)
        save_domain(tmp_path / f"{name}.pt", domain_of(params, base_identity(base)))
        save_generator(tmp_path / f"{name}_folded.pt", params.fold())
        made[name] = tmp_path / f"{name}.pt"
        made[f"{name}_folded"] = tmp_path / f"{name}_folded.pt"
    return made


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def generate(*args):
    return main(["generate", "--n", "4", "--device", "cpu", *map(str, args)])


def test_a_domain_renders_what_its_folded_generator_renders(files, tmp_path):
    assert generate(files["a_folded"], "--out", tmp_path / "folded.png") == 0
    assert generate("--domain", files["a"], "--base", files["base"], "--out", tmp_path / "domain.png") == 0
    assert generate("--domain", files["a"], "--out", tmp_path / "recorded.png") == 0  # the base it records
    assert generate(files["base"], "--out", tmp_path / "base.png") == 0
    folded = pixels(tmp_path / "folded.png")
    assert np.array_equal(pixels(tmp_path / "domain.png"), folded)
    assert np.array_equal(pixels(tmp_path / "recorded.png"), folded)
    assert np.abs(pixels(tmp_path / "base.png") - folded).max() > 10  # the domain changes the images


def test_a_mix_renders_the_weighted_sum_of_offsets(files, tmp_path):
    assert generate("--domain", files["a"], "--domain", files["b"], "--mix", "1,0", "--base", files["base"],
                    "--out", tmp_path / "mix.png") == 0
    assert generate("--domain", files["a"], "--mix", "0", "--out", tmp_path / "zero.png") == 0
    assert generate(files["a_folded"], "--out", tmp_path / "a.png") == 0
    assert generate(files["base"], "--out", tmp_path / "base.png") == 0
    assert np.array_equal(pixels(tmp_path / "mix.png"), pixels(tmp_path / "a.png"))
    assert np.array_equal(pixels(tmp_path / "zero.png"), pixels(tmp_path / "base.png"))
    assert generate("--domain", files["a"], "--domain", files["b"], "--mix", "0.5,0.5",
                    "--out", tmp_path / "half.png") == 0
    assert not np.array_equal(pixels(tmp_path / "half.png"), pixels(tmp_path / "a.png"))


@pytest.mark.parametrize(("case", "message"), [
    ("other base", r"a\.pt: trained on a different base generator: .*other\.pt has SHA-256"),
    ("missing base", r"a\.pt: its base generator '.*base\.pt' is not there; give the base with --base"),
    ("missing base given", r"gone\.pt: base generator file not found"),
    ("weights", r"mix: 1 weight\(s\) \[0\.5\] for 2 domain\(s\)"),
    ("no mix", r"--mix: 2 domains given"),
    ("bad mix", r"--mix: 'half' must be comma-separated numbers"),
    ("both", r"give either a generator file or --domain"),
    ("generator file", r"not a nada-sweep domain file"),
])
def test_bad_domain_input_is_refused_with_nothing_written(case, message, files, tmp_path, capsys):
    other = tmp_path / "other.pt"
    save_generator(other, small_generator(seed=3))
    args = {
        "other base": ["--domain", files["a"], "--base", other],
        "missing base": ["--domain", files["a"]],
        "missing base given": ["--domain", files["a"], "--base", tmp_path / "gone.pt"],
        "weights": ["--domain", files["a"], "--domain", files["b"], "--mix", "0.5"],
        "no mix": ["--domain", files["a"], "--domain", files["b"]],
        "bad mix": ["--domain", files["a"], "--mix", "half"],
        "both": [files["base"], "--domain", files["a"]],
        "generator file": ["--domain", files["a_folded"]],
    }[case]
    if case == "missing base":
        files["base"].unlink()
    out = tmp_path / "grid.png"
    assert generate(*args, "--out", out) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert re.search(message, error), error
    assert not out.exists()
