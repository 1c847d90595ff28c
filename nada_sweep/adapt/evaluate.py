"""Metrics and sample grids on fixed latents: CLIP embeddings of source and adapted images compared.

All metric functions take raw (unnormalised) embeddings; each normalises what it compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from nada_sweep.adapt.losses import template_text_embedding
from nada_sweep.adapt.mapper import LatentMapper, mapped_latents
from nada_sweep.adapt.settings import AdaptConfig
from nada_sweep.models.clip_models import ClipModel
from nada_sweep.models.stylegan2 import Generator
from nada_sweep.sampling import fixed_latents, render

if TYPE_CHECKING:
    from nada_sweep.adapt.nada import Adaptation

EVAL_CHUNK = 8


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


@dataclass(frozen=True)
class EvalSource:
    """What evaluations compare against: the unadapted generator's images of the fixed latents, embedded."""

    w: torch.Tensor
    images: torch.Tensor
    embeddings: torch.Tensor
    diversity: float


def eval_source_key(config: AdaptConfig) -> tuple:
    """The settings an EvalSource depends on besides the generator: runs of one pack that agree share one."""
    return config.n_eval, config.sample_seed, config.sample_truncation, config.eval_clip_name


def eval_source(generator: Generator, config: AdaptConfig, eval_clip: ClipModel, latent_avg) -> EvalSource:
    w = fixed_latents(generator, config.n_eval, config.sample_seed, config.sample_truncation, latent_avg)
    images = render(generator, w, EVAL_CHUNK)
    embeddings = embed(eval_clip, images)
    return EvalSource(w, images, embeddings, diversity(embeddings))


def embed(clip: ClipModel, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([clip.encode_images(chunk) for chunk in images.split(EVAL_CHUNK)]).float()


class Evaluator:
    """Metrics and sample grids on fixed latents, shared by every trial of a sweep (same seed, same latents)."""

    def __init__(self, config: AdaptConfig, adaptation: Adaptation, eval_clip: ClipModel, latent_avg,
                 source: EvalSource | None = None):
        """`source`: this config's EvalSource when already computed (by another run of its pack)."""
        self.config = config
        self.adaptation = adaptation
        self.clip = eval_clip
        self.source = source or eval_source(adaptation.g_frozen, config, eval_clip, latent_avg)
        self.w = self.source.w
        self.source_grid = self.source.images[: config.n_samples]
        self.direction = adaptation.guidance.eval_direction(eval_clip)
        self.target_text = template_text_embedding(eval_clip, config.target) if config.target else None

    def evaluate(
        self, generator: Generator | None = None, mapper: LatentMapper | None = None
    ) -> tuple[dict[str, float | None], torch.Tensor]:
        """Metrics and sample images of `generator` (default: the one in training), through `mapper` if given."""
        generator = generator or self.adaptation.g_train
        images = render(generator, mapped_latents(mapper, generator, self.w), EVAL_CHUNK)
        metrics = evaluate_embeddings(
            self.source.embeddings, embed(self.clip, images), self.direction, self.target_text, self.source.diversity
        )
        return metrics, images[: self.config.n_samples]
