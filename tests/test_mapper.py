"""The latent-mapper stage on tiny real models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from nada_sweep.adapt.mapper import load_mapper, mapped_latents, save_mapper, train_mapper
from nada_sweep.adapt.settings import MapperSettings
from nada_sweep.adapt.nada import load_guidance
from nada_sweep.adapt.run import run_adaptation
from nada_sweep.generate import generate_grid
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.run_files import read_json
from nada_sweep.sampling import fixed_latents, render


@pytest.fixture
def generator():
    return load_generator("builtin:tiny").generator.eval()


def test_mapper_lowers_its_clip_loss(tiny_config, generator):
    guidance = load_guidance(tiny_config, torch.device("cpu"))
    settings = MapperSettings(steps=40, lr=0.01, lambda_l2=0.0, batch=4, scale=1.0)
    _, losses = train_mapper(generator, settings, guidance.global_text_loss, seed=0)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 1e-3


def test_no_mapper_is_bit_identical(generator):
    w = fixed_latents(generator, 3, seed=1, truncation=0.7)
    assert torch.equal(render(generator, mapped_latents(None, generator, w)), render(generator, w))


def test_save_load_round_trip(tmp_path, generator):
    settings = MapperSettings(steps=1, groups=["coarse", "fine"])
    mapper, _ = train_mapper(generator, settings, lambda images: images.mean(), seed=0)
    save_mapper(tmp_path / "mapper.pt", mapper)
    loaded = load_mapper(tmp_path / "mapper.pt")
    w = mapped_latents(None, generator, fixed_latents(generator, 2, seed=0, truncation=1))
    assert torch.equal(loaded(w), mapper(w).detach())
    assert sorted(loaded.groups) == ["coarse", "fine"]


def test_run_with_mapper_then_generate_with_and_without(tiny_config, tmp_path):
    config = tiny_config.model_copy(update={"mapper": MapperSettings(steps=3, batch=2, scale=1.0)})
    run_adaptation(config, tmp_path / "run")
    assert (tmp_path / "run" / "mapper.pt").exists() and (tmp_path / "run" / "samples" / "mapper.png").exists()
    record = read_json(tmp_path / "run" / "mapper_metrics.json")
    assert {"mapper_clip_direction", "mapper_diversity_ratio"} <= set(record)

    generator_file = str(tmp_path / "run" / "generator.pt")
    _, mapped = generate_grid(generator_file, tmp_path / "with.png", n=4, device="cpu")
    _, plain = generate_grid(generator_file, tmp_path / "without.png", n=4, device="cpu", use_mapper=False)
    assert mapped and not plain
    with_mapper = np.asarray(Image.open(tmp_path / "with.png"))
    without = np.asarray(Image.open(tmp_path / "without.png"))
    assert with_mapper.shape == without.shape and not np.array_equal(with_mapper, without)
