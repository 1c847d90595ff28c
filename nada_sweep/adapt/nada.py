"""The twin-generator step of StyleGAN-NADA: the frozen side, the trained side, one optimiser.

Like the reference's ZSSGAN module: everything between two evaluations of a run, nothing about run folders,
schedules or files (nada_sweep.adapt.run holds those).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch

from nada_sweep.adapt.layers import layers_for_indices, pick_w_indices, trainable_indices
from nada_sweep.adapt.losses import ClipGuidance
from nada_sweep.adapt.params import build_params
from nada_sweep.adapt.settings import AdaptConfig
from nada_sweep.models.checkpoints import LoadedGenerator
from nada_sweep.models.clip_models import load_clip


@dataclass
class FrozenBatch:
    """The frozen side of one training step: latents and what the source generator makes of them."""

    styles: list[torch.Tensor]  # w per style vector (two when style mixing happens)
    source_embeddings: list[torch.Tensor]  # per guidance CLIP model
    source_images: torch.Tensor | None  # only kept when a loss needs pixels (the patch loss)


class FrozenSide(Protocol):
    def next_batch(self, batch_size: int) -> FrozenBatch: ...


def sample_z(batch: int, style_dim: int, mixing: float, device: torch.device) -> list[torch.Tensor]:
    """One z per sample, or two (style mixing) with probability `mixing`, as the reference draws them."""
    count = 2 if mixing > 0 and torch.rand(()).item() < mixing else 1
    return [torch.randn(batch, style_dim, device=device) for _ in range(count)]


class LiveFrozenSide:
    """Draws fresh latents and renders the source side every step (the reference's order of work)."""

    def __init__(self, adaptation: Adaptation) -> None:
        self.adaptation = adaptation

    def next_batch(self, batch_size: int) -> FrozenBatch:
        a = self.adaptation
        with torch.no_grad():
            z = sample_z(batch_size, a.g_frozen.style_dim, a.config.mixing, a.device)
            styles = [a.g_frozen.style(s) for s in z]
            images = a.g_frozen(styles, input_is_latent=True, randomize_noise=a.randomize_noise)[0]
            with a.clip_precision():
                embeddings = [e.float() for e in a.guidance.embed_source(images)]
        return FrozenBatch(styles, embeddings, images if a.config.lambda_patch > 0 else None)


class Adaptation:
    """Twin generators and one training step; everything a run does between evaluations."""

    def __init__(self, config: AdaptConfig, loaded: LoadedGenerator, guidance: ClipGuidance, device: torch.device):
        self.config = config
        self.device = device
        self.guidance = guidance
        self.g_frozen = loaded.generator.to(device).eval().requires_grad_(False)
        # The trained side: a copy of the generator (full) or offsets on the frozen one itself (light modes).
        self.g_train = build_params(config.params, self.g_frozen, steps=config.steps)
        # Adam skips parameters without gradients, so one optimiser serves whichever layers are selected.
        self.optimiser = self.g_train.make_optimiser(config.lr)
        self.randomize_noise = True  # tests turn this off to compare steps on identical noise
        self.chosen_indices: list[int] | None = None
        # Indices that drive only a ToRGB layer would select nothing trainable, so they are never chosen.
        self.candidates = trainable_indices(self.g_train, config.layer_map)
        # Until the first update the twins render the same images, which the directional loss must nudge apart.
        self._untrained = True
        self.steps_done = 0  # optimiser steps taken (a resumed run sets it), for schedules such as pruning
        if device.type == "cuda":
            self.use_cuda_switches()
        if config.compile:
            self.g_train.generator.compile()  # in place: parameter names, and so saved files, stay as they are

    @property
    def untrained(self) -> bool:
        """True until this run's first optimiser step in this process."""
        return self._untrained

    def use_cuda_switches(self) -> None:
        """Set torch's process-wide CUDA switches from this run's config (each trial of a worker sets its own)."""
        torch.backends.cuda.matmul.allow_tf32 = self.config.cuda_tf32
        torch.backends.cudnn.allow_tf32 = self.config.cuda_tf32
        # A run's convolution shapes never change (fixed batch, eval chunk and layer-search batch), so the
        # fastest cuDNN algorithm is worth finding once per shape.
        torch.backends.cudnn.benchmark = True

    def clip_precision(self) -> contextlib.AbstractContextManager:
        """bf16 autocast for CLIP forward passes when cuda_bf16_clip asks for it on a CUDA device."""
        if self.device.type == "cuda" and self.config.cuda_bf16_clip:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def choose_layers(self, z: torch.Tensor | None = None) -> list[int]:
        """Adaptive layer selection: optimise W+ on the global CLIP loss, keep the k most-moved indices."""
        if not self.searches_layers:
            return self.use_layers(list(self.candidates))
        indices = pick_w_indices(
            self.g_train,
            self.search_start(z),
            self.selection_loss,
            self.config.k,
            self.config.auto_layer_iters,
            weight_gradients=self.config.faithful,
            randomize_noise=self.randomize_noise,
            candidates=self.candidates,
        )
        return self.use_layers(indices)

    @property
    def searches_layers(self) -> bool:
        """Whether choosing layers optimises W+; with k at least the candidates' count the top k are all of them
        whatever the search finds, so it is skipped (faithful runs search anyway, as the reference does)."""
        return self.config.k < len(self.candidates) or self.config.faithful

    def search_start(self, z: torch.Tensor | None = None) -> torch.Tensor:
        """The w the layer search starts from: of `z`, else of auto_layer_batch fresh latents."""
        if z is None:
            z = torch.randn(self.config.auto_layer_batch, self.g_frozen.style_dim, device=self.device)
        with torch.no_grad():
            return self.g_frozen.style(z)

    def use_layers(self, indices: list[int]) -> list[int]:
        """Train (until the next choice) the layers the w `indices` map to."""
        self.g_train.select(layers_for_indices(self.g_train, indices, self.config.layer_map))
        self.chosen_indices = indices
        return indices

    def chooses_layers_at(self, step_index: int) -> bool:
        return self.config.selects_layers and step_index % self.config.auto_layer_every == 0

    def selection_loss(self, images: torch.Tensor, dst_embeddings: list[torch.Tensor] | None = None
                       ) -> torch.Tensor:
        """What the layer search minimises for this run (a pack passes the embeddings, computed for all members)."""
        # The layer search's CLIP passes are most of a selecting step's work: the same precision as training's.
        with self.clip_precision():
            return self.guidance.global_text_loss(images, dst_embeddings).float()

    def train_step(self, batch: FrozenBatch) -> torch.Tensor:
        """One optimiser step; returns the loss as a 0-d tensor on the device (reading it would wait for the GPU)."""
        images = self.g_train(batch.styles, input_is_latent=True, randomize_noise=self.randomize_noise)[0]
        loss = self.loss_of(images, batch)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        return self.finish_step(loss)

    def loss_of(self, images: torch.Tensor, batch: FrozenBatch,
                dst_embeddings: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The CLIP loss of this run's adapted `images` (a pack passes their embeddings, computed for all members)."""
        with self.clip_precision():
            return self.guidance.loss(images, batch.source_embeddings, batch.source_images,
                                      may_be_identical=self._untrained, dst_embs=dst_embeddings)

    def finish_step(self, loss: torch.Tensor) -> torch.Tensor:
        """After backward: the optimiser step and this run's step count and schedules."""
        self.optimiser.step()
        self._untrained = False
        self.steps_done += 1
        self.g_train.after_step(self.steps_done)
        return loss.detach()

    def step(self, step_index: int, frozen: FrozenSide) -> torch.Tensor:
        """Step `step_index` of a run, choosing layers first on the steps that choose them."""
        if self.chooses_layers_at(step_index):
            self.choose_layers()
        return self.train_step(frozen.next_batch(self.config.batch))


def load_guidance(config: AdaptConfig, device: torch.device) -> ClipGuidance:
    models = [(load_clip(spec.name, device), spec.weight) for spec in config.clip]
    return ClipGuidance(
        models,
        source=config.source,
        target=config.target,
        lambda_direction=config.lambda_direction,
        lambda_global=config.lambda_global,
        lambda_manifold=config.lambda_manifold,
        lambda_patch=config.lambda_patch,
        lambda_indomain=config.lambda_indomain,
    )
