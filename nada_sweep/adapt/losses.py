"""StyleGAN-NADA's CLIP losses: text directions from prompt templates, and the directional, global,
manifold and patch losses, combined over an ensemble of CLIP models by ClipGuidance; HyperDomainNet's
in-domain angle-consistency and target-target direction losses.

The loss functions take embeddings as CLIP returns them (not normalised) and normalise inside, so a
caller can never forget to. Text embeddings are computed once per CLIP model instance, in float32 whatever
autocast is on, and kept in its `cache` (load_clip returns one instance per spec and device per process), so
every trial in a worker that adapts the same domain reuses them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from nada_sweep.errors import UserError
from nada_sweep.images import IMAGE_SUFFIXES, image_files
from nada_sweep.models.clip_models import IMAGENET_TEMPLATES, ClipModel

__all__ = [
    "IMAGENET_TEMPLATES", "ClipGuidance", "directional_loss", "global_loss", "image_direction_target",
    "indomain_loss", "manifold_loss", "patch_directional_loss", "template_text_embedding", "text_direction",
    "tt_direction_loss",
]


def _cached(clip: ClipModel, key: tuple, compute: Callable[[], Tensor]) -> Tensor:
    """clip.cache[key], computed on first use in float32 with autocast off.

    The cache outlives the trial that fills it (every later trial of the worker reads it), so what a trial
    under bf16 autocast computes must not differ from what an fp32 trial would.
    """
    if key not in clip.cache:
        with torch.autocast(clip.device.type, enabled=False):
            clip.cache[key] = compute().float()
    return clip.cache[key]


def _templated_embeddings(clip: ClipModel, text: str) -> Tensor:
    """[T, D]: `text` in every template, encoded and normalised one by one."""
    prompts = [template.format(text) for template in IMAGENET_TEMPLATES]
    return _cached(clip, ("templates", text), lambda: F.normalize(clip.encode_texts(prompts), dim=-1))


def template_text_embedding(clip: ClipModel, text: str) -> Tensor:
    """Unit [D]: the mean of the normalised template embeddings of `text`, normalised."""
    return F.normalize(_templated_embeddings(clip, text).mean(dim=0), dim=-1)


def text_direction(clip: ClipModel, source: str, target: str) -> Tensor:
    """Unit [D] text direction dT: mean over templates of (target_i - source_i), normalised.

    Cached per (model instance, source, target); a model instance stands for one (name, device).
    """
    def compute() -> Tensor:
        diff = _templated_embeddings(clip, target) - _templated_embeddings(clip, source)
        return F.normalize(diff.mean(dim=0), dim=-1)

    # A clone: callers may edit their copy without touching the cache.
    return _cached(clip, ("direction", source, target), compute).clone()


def _raw_text_embedding(clip: ClipModel, text: str) -> Tensor:
    """Unit [D] embedding of `text` as written, without templates (the global loss's text)."""
    return _cached(clip, ("raw", text), lambda: F.normalize(clip.encode_texts([text])[0], dim=-1))


def style_image_files(style_images_dir: str | Path) -> list[Path]:
    """The image files of a style-image folder; UserError naming the folder when it is none or holds none."""
    folder = Path(style_images_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"style images: {str(folder)!r} is not a folder; give a folder of images "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    files = image_files(folder)
    if not files:
        raise UserError(f"style images: {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def style_embedding(clip: ClipModel, style_images_dir: str | Path) -> Tensor:
    """[D]: the mean of the style images' normalised embeddings (the point an image-guided target aims at)."""
    with torch.no_grad():
        # One by one: style images may all differ in size, and there are few of them.
        return torch.stack([F.normalize(clip.encode_images(_read_image(p)), dim=-1)[0]
                            for p in style_image_files(style_images_dir)]).mean(dim=0)


def image_direction_target(clip: ClipModel, style_images_dir: str | Path, generated_images: Tensor) -> Tensor:
    """Unit [D] target direction for image-guided adaptation.

    mean(normalised E(style image)) - mean(normalised E(generated image)), normalised; style images are the
    image files of `style_images_dir`, generated_images a [N, 3, H, W] batch in [-1, 1] (~16 samples
    of the source generator).
    """
    return _direction_from(style_embedding(clip, style_images_dir), clip, generated_images)


def _direction_from(style: Tensor, clip: ClipModel, generated_images: Tensor) -> Tensor:
    with torch.no_grad():
        generated = torch.cat([F.normalize(clip.encode_images(chunk), dim=-1)
                               for chunk in generated_images.split(8)])
    return F.normalize(style - generated.mean(dim=0), dim=-1)


def _read_image(path: Path) -> Tensor:
    """An image file -> [1, 3, H, W] float tensor in [-1, 1]."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise UserError(f"style images: cannot read {str(path)!r} as an image: {exc}") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0) / 127.5 - 1


def directional_loss(src_emb: Tensor, dst_emb: Tensor, direction: Tensor) -> Tensor:
    """mean(1 - cos(dI, dT)) with dI = normalise(normalise(dst) - normalise(src)) per sample.

    src_emb, dst_emb: [N, D] image embeddings; direction: [D] (or [N, D]) target direction dT.
    """
    image_direction = F.normalize(F.normalize(dst_emb, dim=-1) - F.normalize(src_emb, dim=-1), dim=-1)
    return (1 - (image_direction * F.normalize(direction, dim=-1)).sum(dim=-1)).mean()


def global_loss(dst_emb: Tensor, text_emb: Tensor) -> Tensor:
    """mean(1 - cos(image embedding, text embedding)); dst_emb [N, D], text_emb [D] or [N, D]."""
    return (1 - (F.normalize(dst_emb, dim=-1) * F.normalize(text_emb, dim=-1)).sum(dim=-1)).mean()


def manifold_loss(src_emb: Tensor, dst_emb: Tensor, src_text_emb: Tensor, tgt_text_emb: Tensor) -> Tensor:
    """mean |cos(src image, dst image) - cos(source text, target text)|.

    The reference's "clip_angle_loss": the adapted image should sit as far from its source image as the
    target text sits from the source text.
    """
    image_cos = (F.normalize(src_emb, dim=-1) * F.normalize(dst_emb, dim=-1)).sum(dim=-1)
    text_cos = (F.normalize(src_text_emb, dim=-1) * F.normalize(tgt_text_emb, dim=-1)).sum(dim=-1)
    return (image_cos - text_cos).abs().mean()


def _pairs(n: int) -> tuple[Tensor, Tensor]:
    """Indices (i, j), i > j, of every unordered pair of n samples."""
    if n < 2:
        raise ValueError(f"a pairwise loss needs a batch of at least 2 samples, got {n}")
    i, j = torch.tril_indices(n, n, offset=-1)
    return i, j


def indomain_loss(src_emb: Tensor, dst_emb: Tensor) -> Tensor:
    """Mean over sample pairs (i, j) of (cos(src_i, src_j) - cos(dst_i, dst_j))^2 (HyperDomainNet's "indomain").

    Keeps the angles between adapted images those between their source images, which counters mode
    collapse. src_emb, dst_emb: [N, D] image embeddings of the same N >= 2 latents.
    """
    i, j = _pairs(src_emb.shape[0])
    src, dst = F.normalize(src_emb, dim=-1), F.normalize(dst_emb, dim=-1)
    return ((src[i] * src[j]).sum(-1) - (dst[i] * dst[j]).sum(-1)).square().mean()


def tt_direction_loss(dst_emb: Tensor, target_text_embs: Tensor) -> Tensor:
    """Mean over sample pairs (i, j) of 1 - cos(dst_i - dst_j, text_i - text_j) (HyperDomainNet's "tt_direction").

    dst_emb: [N, D] adapted-image embeddings; target_text_embs: each sample's target-domain text embedding,
    [N, D], or [N, T, D] per template (the pair's text difference is then averaged over templates). Both
    are normalised first (each template on its own). As in the reference, a pair whose texts are equal has
    a zero text difference, whose cosine counts as 0: such a pair adds a constant 1 and no gradient, so the
    loss only shapes batches that mix target domains (with one domain per batch it is the constant 1).
    """
    i, j = _pairs(dst_emb.shape[0])
    dst, text = F.normalize(dst_emb, dim=-1), F.normalize(target_text_embs, dim=-1)
    text_delta = text[i] - text[j]
    if text_delta.ndim == 3:
        text_delta = text_delta.mean(dim=1)
    return (1 - F.cosine_similarity(dst[i] - dst[j], text_delta, dim=-1)).mean()


def patch_directional_loss(clip: ClipModel, img_src: Tensor, img_dst: Tensor, direction: Tensor,
                           n_patches: int, patch_size: int, generator: torch.Generator | None) -> Tensor:
    """Directional loss on random square crops, cut at the same places from source and adapted images.

    n_patches crops of patch_size pixels per image, placed uniformly by `generator` (a CPU generator;
    None: torch's global RNG). Simplified from the reference, which takes one 510 px crop of a 1024 px
    image and weights the loss by how well the crop's direction matches each of 15 "part" prompt
    directions ("{} eye", ...); here every crop is compared with the adaptation's target direction.
    """
    n, _, height, width = img_dst.shape
    if not 0 < patch_size <= min(height, width):
        raise UserError(f"patch_size: {patch_size} must be between 1 and the image's shorter side "
                        f"({min(height, width)} px)")
    tops = torch.randint(0, height - patch_size + 1, (n, n_patches), generator=generator).tolist()
    lefts = torch.randint(0, width - patch_size + 1, (n, n_patches), generator=generator).tolist()

    def crops(images: Tensor) -> Tensor:
        return torch.stack([images[i, :, top:top + patch_size, left:left + patch_size]
                            for i in range(n) for top, left in zip(tops[i], lefts[i])])

    with torch.no_grad():
        src_emb = clip.encode_images(crops(img_src))
    return directional_loss(src_emb, clip.encode_images(crops(img_dst)), direction)


class ClipGuidance:
    """The CLIP loss of one adaptation: an ensemble of CLIP models, each with a weight, and loss weights.

    loss = sum_m weight_m * (lambda_direction * directional + lambda_global * global
                             + lambda_manifold * manifold + lambda_patch * patch + lambda_indomain * indomain)
    Terms whose lambda is 0 are not computed. The target direction is the text direction of source ->
    target, or after use_image_target() the image-guided direction of each model.
    """

    def __init__(
        self,
        models: Sequence[tuple[ClipModel, float]],  # the ensemble: (model, weight > 0)
        *,
        source: str | None,                  # source domain text ("photo")
        target: str | None,                  # target domain text ("pencil sketch"); None: image-guided only
        lambda_direction: float = 1.0,       # directional loss weight (the method's main loss)
        lambda_global: float = 0.0,          # 1 - cos(image, "a {target}")
        lambda_manifold: float = 0.0,        # L1 between image and text cosines
        lambda_patch: float = 0.0,           # directional loss on random crops
        lambda_indomain: float = 0.0,        # angle consistency between the batch's samples (batch >= 2)
        n_patches: int = 1,                  # crops per image for the patch loss
        patch_size: int | None = None,       # crop side in pixels; None: half the image's shorter side
        seed: int = 0,                       # seeds the crop placement
    ) -> None:
        if not models:
            raise UserError("clip: no CLIP model given; name at least one, e.g. ViT-B/32")
        for clip, weight in models:
            if not (math.isfinite(weight) and weight > 0):
                raise UserError(f"clip: {clip.name}={weight}: the weight must be a finite number > 0")
        lambdas = {"lambda_direction": lambda_direction, "lambda_global": lambda_global,
                   "lambda_manifold": lambda_manifold, "lambda_patch": lambda_patch,
                   "lambda_indomain": lambda_indomain}
        for name, value in lambdas.items():
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"{name}: {value} must be a finite number >= 0")
        if not any(lambdas.values()):
            raise UserError(f"{', '.join(lambdas)}: all are 0; at least one loss needs a weight > 0")
        if n_patches < 1:
            raise UserError(f"n_patches: {n_patches} must be at least 1")
        if lambda_manifold > 0:
            _require_text("source", source, "the manifold loss (lambda_manifold > 0)")
            _require_text("target", target, "the manifold loss (lambda_manifold > 0)")
        if lambda_global > 0:
            _require_text("target", target, "the global loss (lambda_global > 0)")

        self.models = [(clip, float(weight)) for clip, weight in models]
        self.source, self.target = source, target
        self.lambda_direction, self.lambda_global = float(lambda_direction), float(lambda_global)
        self.lambda_manifold, self.lambda_patch = float(lambda_manifold), float(lambda_patch)
        self.lambda_indomain = float(lambda_indomain)
        self.n_patches, self.patch_size = n_patches, patch_size
        self._generator = torch.Generator().manual_seed(seed)
        self._image_target: tuple[Path, Tensor] | None = None  # style folder, generated samples (on CPU)
        self._image_directions: list[Tensor] | None = None
        self._style_embeddings: list[Tensor] | None = None  # per model, with an image-guided target

    def use_image_target(self, style_dir: str | Path, generated_images: Tensor) -> None:
        """Switch every model to the image-guided direction: style images vs these source-generator samples.

        The samples are kept (on the CPU) so eval_direction can measure the same direction with another model.
        """
        generated = generated_images.detach().cpu()
        self._style_embeddings = [style_embedding(clip, style_dir) for clip, _ in self.models]
        self._image_directions = [_direction_from(style, clip, generated)
                                  for style, (clip, _) in zip(self._style_embeddings, self.models)]
        self._image_target = (Path(style_dir), generated)

    def eval_direction(self, clip: ClipModel) -> Tensor:
        """The target direction as `clip` sees it (any model, in the ensemble or not), unit [D]."""
        if self._image_target is not None:
            return image_direction_target(clip, *self._image_target)
        _require_text("target", self.target, "the directional loss (or give target images)")
        _require_text("source", self.source, "the directional loss")
        return text_direction(clip, self.source, self.target)

    def _direction(self, index: int) -> Tensor:
        if self._image_directions is not None:
            return self._image_directions[index]
        return self.eval_direction(self.models[index][0])

    def embed_source(self, img_src: Tensor) -> list[Tensor]:
        """CLIP embeddings of the frozen generator's images, one [N, D] tensor per model, without gradients."""
        with torch.no_grad():
            return [clip.encode_images(img_src) for clip, _ in self.models]

    def loss(self, img_dst: Tensor, src_embs: Sequence[Tensor], img_src: Tensor | None = None,
             may_be_identical: bool = True, dst_embs: Sequence[Tensor] | None = None) -> Tensor:
        """The weighted CLIP loss of the adapted images (scalar, differentiable wrt img_dst).

        src_embs: embed_source(img_src) for the same latents; img_src itself is needed only for the patch loss.
        may_be_identical: whether the adapted images can equal the source ones (untrained weights); only
        then is the check made, which waits for the GPU.
        dst_embs: encode_images(img_dst) per model when the caller has them already (a pack embeds the
        images of all its members in one pass).
        """
        if self.lambda_patch > 0 and img_src is None:
            raise ValueError("the patch loss (lambda_patch > 0) needs img_src")
        total: Tensor | None = None
        for index, ((clip, weight), src_emb) in enumerate(zip(self.models, src_embs, strict=True)):
            direction = self._direction(index) if self.lambda_direction or self.lambda_patch else None
            terms: list[Tensor] = []
            if self.lambda_direction or self.lambda_global or self.lambda_manifold or self.lambda_indomain:
                dst_emb = clip.encode_images(img_dst) if dst_embs is None else dst_embs[index]
                src_emb = src_emb.to(dst_emb.device)
            if self.lambda_direction:
                dst_for_direction = dst_emb
                if may_be_identical and torch.equal(dst_emb, src_emb):
                    # Identical images (step 0 with the same noise) have no direction, and normalising a
                    # zero vector gives a useless loss; like the reference, nudge the adapted images.
                    dst_for_direction = clip.encode_images(img_dst + 1e-6)
                terms.append(self.lambda_direction * directional_loss(src_emb, dst_for_direction, direction))
            if self.lambda_global:
                text_emb = _raw_text_embedding(clip, f"a {self.target}")
                terms.append(self.lambda_global * global_loss(dst_emb, text_emb))
            if self.lambda_manifold:
                src_text = template_text_embedding(clip, self.source)
                tgt_text = template_text_embedding(clip, self.target)
                terms.append(self.lambda_manifold * manifold_loss(src_emb, dst_emb, src_text, tgt_text))
            if self.lambda_indomain:
                terms.append(self.lambda_indomain * indomain_loss(src_emb, dst_emb))
            if self.lambda_patch:
                patch_size = self.patch_size or min(img_dst.shape[-2:]) // 2
                terms.append(self.lambda_patch * patch_directional_loss(
                    clip, img_src, img_dst, direction, self.n_patches, patch_size, self._generator))
            model_loss = weight * torch.stack(terms).sum()
            total = model_loss if total is None else total + model_loss.to(total.device)
        return total

    def mapper_loss(self, images: Tensor) -> Tensor:
        """What the latent mapper minimises: the global loss against the target text, or with an image-guided
        target (no text) against the style images' mean embedding."""
        if self.target or self._style_embeddings is None:
            return self.global_text_loss(images)
        total: Tensor | None = None
        for (clip, weight), style in zip(self.models, self._style_embeddings, strict=True):
            model_loss = weight * global_loss(clip.encode_images(images), style)
            total = model_loss if total is None else total + model_loss.to(total.device)
        return total

    def global_text_loss(self, images: Tensor) -> Tensor:
        """sum_m weight_m * mean(1 - cos(E_I(images), E_T(target))) against the raw target text.

        What adaptive layer selection minimises over W+ (the reference uses the text as written, no "a ").
        """
        _require_text("target", self.target, "adaptive layer selection (it optimises towards the "
                      "target text); give a target text or turn layer selection off")
        total: Tensor | None = None
        for clip, weight in self.models:
            text_emb = _raw_text_embedding(clip, self.target)
            model_loss = weight * global_loss(clip.encode_images(images), text_emb)
            total = model_loss if total is None else total + model_loss.to(total.device)
        return total


def _require_text(field: str, value: str | None, purpose: str) -> None:
    if value is None or not value.strip():
        raise UserError(f"{field}: {value!r}: a {field} text is needed for {purpose}")
