"""Evaluation metrics on constructed embeddings whose answers are known by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nada_sweep.adapt.evaluate import (
    clip_direction,
    clip_quality,
    diversity,
    evaluate_embeddings,
    preservation,
)
from nada_sweep.metric_rules import finite, is_better

E = torch.eye(4)  # orthonormal basis e0..e3


def test_clip_quality_is_mean_cosine_to_the_text_and_ignores_scale():
    adapted = torch.stack([3 * E[0], 0.5 * E[1]])  # cos 1 and cos 0 to e0
    assert clip_quality(adapted, 7 * E[0]) == pytest.approx(0.5)
    assert clip_quality(-adapted[:1], E[0]) == pytest.approx(-1.0)


def test_clip_direction_follows_the_text_direction():
    source = torch.stack([E[0], 2 * E[0]])
    adapted = torch.stack([E[1], 5 * E[1]])
    towards = F.normalize(E[1] - E[0], dim=0)
    assert clip_direction(source, adapted, towards) == pytest.approx(1.0)
    assert clip_direction(source, adapted, -towards) == pytest.approx(-1.0)
    assert clip_direction(source, adapted, E[2]) == pytest.approx(0.0, abs=1e-6)
    # Two latents, one following the direction and one moving orthogonally to it: (1 + 0.5) / 2.
    mixed_adapted = torch.stack([E[1], E[2]])
    expected = (1 + F.cosine_similarity(F.normalize(E[2] - E[0], dim=0), towards, dim=0).item()) / 2
    assert clip_direction(source, mixed_adapted, towards) == pytest.approx(expected)
    assert expected == pytest.approx(0.75)


def test_diversity_of_identical_orthogonal_and_opposite_embeddings():
    assert diversity(torch.stack([E[0], 2 * E[0], 3 * E[0]])) == pytest.approx(0.0, abs=1e-6)
    assert diversity(E[:3]) == pytest.approx(1.0)
    assert diversity(torch.stack([E[0], -E[0]])) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        diversity(E[:1])


def test_preservation_is_cosine_between_source_and_adapted_of_each_latent():
    assert preservation(E[:3], 4 * E[:3]) == pytest.approx(1.0)
    assert preservation(E[:2], torch.stack([E[1], E[0]])) == pytest.approx(0.0, abs=1e-6)
    assert preservation(E[:2], torch.stack([E[0], -E[1]])) == pytest.approx(0.0, abs=1e-6)


def test_evaluate_embeddings_combines_every_metric_and_the_diversity_ratio():
    source = E[:3]  # diversity 1
    collapsed = torch.stack([E[3], E[3], E[3]])  # every latent maps to one image: diversity 0
    metrics = evaluate_embeddings(source, collapsed, E[3], E[3], source_diversity=diversity(source))
    assert metrics["diversity"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["diversity_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["clip_quality"] == pytest.approx(1.0)
    assert metrics["preservation"] == pytest.approx(0.0, abs=1e-6)
    same = evaluate_embeddings(source, source, E[3], None, source_diversity=1.0)
    assert same["diversity_ratio"] == pytest.approx(1.0)
    assert same["clip_quality"] is None  # image-guided target: no text to score against
    assert evaluate_embeddings(source, source, E[3], None, source_diversity=0.0)["diversity_ratio"] is None


def test_finite_and_is_better():
    assert finite(0.5) == 0.5 and finite(3) == 3.0
    assert finite(float("nan")) is None and finite(math.inf) is None and finite(None) is None
    assert finite(True) is None and finite("0.5") is None
    assert is_better("clip_direction", 0.3, 0.2) and not is_better("clip_direction", 0.1, 0.2)
    assert is_better("loss", 0.1, 0.2) and not is_better("loss", 0.3, 0.2)
    assert is_better("clip_direction", 0.2, 0.2) and is_better("loss", 0.2, 0.2)  # ties: the later step
    assert is_better("clip_direction", -5.0, None)
    assert not is_better("clip_direction", float("nan"), None) and not is_better("loss", None, 0.2)
