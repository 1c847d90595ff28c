"""Evaluation metrics on CLIP embeddings of fixed latents (pure functions, no models).

All inputs are raw (unnormalised) embeddings; each function normalises what it compares.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

METRIC_NAMES = ("clip_quality", "clip_direction", "diversity", "diversity_ratio", "preservation")

# Higher is better for every metric we select by except the loss.
LOWER_IS_BETTER = {"loss"}

# What a sweep may pick its best trial and step by.
SELECTABLE = (*METRIC_NAMES, "loss")


def finite(value: object) -> float | None:
    """`value` as a float when it is a finite number, else None (metrics.jsonl may hold null or NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def is_better(metric: str, value: object, best: object) -> bool:
    """Whether `value` beats `best` for `metric`; a missing or non-finite value never wins, ties go to `value`."""
    value = finite(value)
    if value is None:
        return False
    best = finite(best)
    if best is None:
        return True
    return value <= best if metric in LOWER_IS_BETTER else value >= best


def clip_quality(adapted: torch.Tensor, target_text: torch.Tensor) -> float:
    """Mean cosine similarity of adapted images to the (template-averaged) target text embedding."""
    return F.cosine_similarity(adapted, target_text.expand_as(adapted), dim=-1).mean().item()


def clip_direction(source: torch.Tensor, adapted: torch.Tensor, text_direction: torch.Tensor) -> float:
    """Mean cos(dI, dT): how well each latent's image change follows the text direction."""
    image_direction = F.normalize(F.normalize(adapted, dim=-1) - F.normalize(source, dim=-1), dim=-1)
    return F.cosine_similarity(image_direction, text_direction.expand_as(image_direction), dim=-1).mean().item()


def diversity(embeddings: torch.Tensor) -> float:
    """Mean pairwise (1 - cos) between distinct samples; mode collapse drives it towards 0."""
    unit = F.normalize(embeddings, dim=-1)
    n = unit.shape[0]
    if n < 2:
        raise ValueError("diversity needs at least two embeddings")
    similarity = unit @ unit.T
    off_diagonal = similarity.sum() - similarity.diagonal().sum()
    return (1 - off_diagonal / (n * (n - 1))).item()


def preservation(source: torch.Tensor, adapted: torch.Tensor) -> float:
    """Mean cos between the source and adapted image of the same latent (structure kept)."""
    return F.cosine_similarity(source, adapted, dim=-1).mean().item()


def evaluate_embeddings(
    source: torch.Tensor,
    adapted: torch.Tensor,
    text_direction: torch.Tensor,
    target_text: torch.Tensor | None,
    source_diversity: float,
) -> dict[str, float | None]:
    """Every metric of one eval step. `target_text` is None for image-guided targets (no text to score)."""
    adapted_diversity = diversity(adapted)
    return {
        "clip_quality": clip_quality(adapted, target_text) if target_text is not None else None,
        "clip_direction": clip_direction(source, adapted, text_direction),
        "diversity": adapted_diversity,
        "diversity_ratio": adapted_diversity / source_diversity if source_diversity > 0 else None,
        "preservation": preservation(source, adapted),
    }
