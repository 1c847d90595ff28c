"""The gallery's morph rows: each light-mode winner's offsets scaled 0 -> 1, rendered outside report/."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from report_helpers import fake_trial, line
from test_params import perturb

from nada_sweep.adapt.domains import apply_domain, base_identity, domain_of, save_domain
from nada_sweep.adapt.params import build_params
from nada_sweep.cli import main
from nada_sweep.images import grid_array
from nada_sweep.media import domain_morphs
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.run_files import DOMAIN
from nada_sweep.sampling import fixed_latents, render


def light_trial(root, domain, trial, score, seed=0):
    folder = fake_trial(root, domain, trial, [line(2, clip_direction=score)], params="stylespace", trainable=320)
    params = build_params("stylespace", load_generator("builtin:tiny").generator)
    perturb(params, seed=seed, scale=0.5)
    save_domain(folder.path(DOMAIN), domain_of(params, base_identity("builtin:tiny")))
    return folder, params


def tile(grid, row, column, size=64, padding=2):
    y, x = padding + row * (size + padding), padding + column * (size + padding)
    return grid[y:y + size, x:x + size]


def test_report_renders_a_morph_row_for_each_light_winner(tmp_path, capsys):
    _, params = light_trial(tmp_path, "sketch", "light", 0.5)
    fake_trial(tmp_path, "sketch", "full", [line(2, clip_direction=0.1)])
    fake_trial(tmp_path, "pixel", "full", [line(2, clip_direction=0.3)])
    assert main(["report", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "morphs" / "manifest.json").read_text())
    assert [(e["domain"], e["trial"]) for e in manifest["domains"]] == [("sketch", "light")]
    grid = np.asarray(Image.open(tmp_path / "morphs" / "sketch.png").convert("RGB"))
    steps, samples = domain_morphs.STEPS, domain_morphs.SAMPLES
    assert grid.shape == (2 + samples * 66, 2 + steps * 66, 3)

    base = load_generator("builtin:tiny").generator
    w = fixed_latents(base, samples, domain_morphs.SEED, domain_morphs.TRUNCATION)
    source = grid_array(render(base, w), nrow=1)
    adapted = grid_array(render(apply_domain(domain_of(params, base_identity("builtin:tiny")), base), w), nrow=1)
    for row in range(samples):
        assert np.array_equal(tile(grid, row, 0), tile(source, row, 0))  # t = 0: the source
        assert np.array_equal(tile(grid, row, steps - 1), tile(adapted, row, 0))  # t = 1: the domain
        assert not np.array_equal(tile(grid, row, 2), tile(grid, row, 0))

    html = (tmp_path / "index.html").read_text()
    assert "sketch: source → domain" in html and "morphs/sketch.png" in html
    assert "pixel: source" not in html

    stamp = (tmp_path / "morphs" / "sketch.png").stat().st_mtime_ns
    assert main(["report", str(tmp_path)]) == 0  # unchanged: not rendered again
    assert (tmp_path / "morphs" / "sketch.png").stat().st_mtime_ns == stamp


def test_a_stale_morph_row_says_so_and_the_next_report_renders_it_again(tmp_path):
    light_trial(tmp_path, "sketch", "a", 0.5)
    assert main(["report", str(tmp_path)]) == 0
    light_trial(tmp_path, "sketch", "b", 0.9, seed=1)
    assert main(["report", str(tmp_path), "--no-morphs"]) == 0
    assert "rendered from trial a; the selected trial is now b" in (tmp_path / "index.html").read_text()
    assert main(["report", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "morphs" / "manifest.json").read_text())["domains"][0]["trial"] == "b"
    assert "the selected trial is now" not in (tmp_path / "index.html").read_text()


def test_a_domain_whose_base_differs_gets_no_morph_row_and_a_warning(tmp_path, capsys):
    folder, params = light_trial(tmp_path, "sketch", "light", 0.5)
    domain = domain_of(params, base_identity("builtin:tiny"))
    domain.base = type(domain.base)("builtin:tiny", "0" * 64)
    save_domain(folder.path(DOMAIN), domain)
    assert main(["report", str(tmp_path)]) == 0
    assert "sketch: no morph row (" in capsys.readouterr().out.replace("\n", "")
    assert not (tmp_path / "morphs" / "sketch.png").exists()
