"""Shared fixtures: tiny real models (random weights) so every test runs the real code paths on CPU."""

from __future__ import annotations

import pytest
import torch

from nada_sweep.adapt.settings import AdaptConfig, ClipSpec

torch.set_num_threads(2)

pytest_plugins = ["sweep_helpers"]  # its local_ray fixture serves the sweep and fault tests


@pytest.fixture
def tiny_config() -> AdaptConfig:
    """A short adaptation on the built-in tiny generator and tiny CLIP."""
    return AdaptConfig(
        generator="builtin:tiny",
        clip=[ClipSpec(name="builtin:tiny")],
        source="photo",
        target="pencil sketch",
        steps=6,
        eval_every=3,
        n_eval=4,
        n_samples=2,
        device="cpu",
    )
