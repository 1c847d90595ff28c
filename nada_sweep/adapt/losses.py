"""StyleGAN-NADA's CLIP losses: text directions from prompt templates, and the directional, global,
manifold and part-weighted patch losses, combined over an ensemble of CLIP models by ClipGuidance;
HyperDomainNet's in-domain angle-consistency and target-target direction losses.

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

from nada_sweep.errors import UserError, quoted
from nada_sweep.images import IMAGE_SUFFIXES, image_files
from nada_sweep.models.clip_models import CONTEXT_LENGTH, IMAGENET_TEMPLATES, ClipModel, check_prompt

__all__ = [
    "IMAGENET_TEMPLATES", "PART_PROMPTS", "ClipGuidance", "directional_loss", "global_loss",
    "image_direction_target", "indomain_loss", "manifold_loss", "part_directions", "part_weighted_loss",
    "patch_directional_loss", "template_text_embedding", "text_direction", "tt_direction_loss",
]

# The patch loss's "part" prompts, each holding the domain text at {}: a crop's change is compared with the
# text direction of every part (source -> target, each inside every prompt template) and weighted towards
# the parts it matches best, as the reference's patch loss does with its own list. Ours is generic (faces,
# animals, objects, scenes) and in our own words; benchmarks/official_parity.py passes the reference's list
# instead when it compares numbers with the official code.
PART_PROMPTS: tuple[str, ...] = (
    "a close-up of the eyes of a {}.",
    "a close-up of the mouth of a {}.",
    "the hair on top of a {}.",
    "the skin of a {}.",
    "the outline of a {}.",
    "the texture of a {}.",
    "the surface of a {}.",
    "a small detail of a {}.",
    "the upper half of a {}.",
    "the lower half of a {}.",
    "an edge of a {}.",
    "the background around a {}.",
)

# exp(logit_scale) of OpenAI's released CLIP models (training clamps it there). The reference's global loss
# divides CLIP's logits by it: 1 - cos for those models, scaled by exp(logit_scale) / 100 for any other.
REFERENCE_LOGIT_SCALE = 100.0


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


def global_loss(dst_emb: Tensor, text_emb: Tensor, logit_scale: Tensor | float) -> Tensor:
    """mean(1 - exp(logit_scale) * cos(image embedding, text embedding) / 100): the reference's 1 - logits / 100.

    dst_emb [N, D], text_emb [D] or [N, D]; logit_scale: the model's learned log temperature
    (clip.model.logit_scale), whose exp is 100 in OpenAI's released models, where this is mean(1 - cos).
    """
    cos = (F.normalize(dst_emb, dim=-1) * F.normalize(text_emb, dim=-1)).sum(dim=-1)
    scale = torch.as_tensor(logit_scale, device=cos.device).exp()
    return (1 - scale * cos / REFERENCE_LOGIT_SCALE).mean()


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


def part_directions(clip: ClipModel, source: str, target: str, prompts: Sequence[str] = PART_PROMPTS) -> Tensor:
    """Unit [P, D]: per part prompt p, text_direction(p with source, p with target); cached per model instance."""
    key = ("part directions", source, target, tuple(prompts))
    return _cached(clip, key, lambda: torch.stack(
        [text_direction(clip, p.format(source), p.format(target)) for p in prompts]))


def part_weighted_loss(src_emb: Tensor, dst_emb: Tensor, part_dirs: Tensor) -> Tensor:
    """mean over crops n and parts p of softmax_p(c_n)[p] * (1 - c_np), c_np = cos(dI_n, part direction p).

    src_emb, dst_emb: [N, D] crop embeddings; part_dirs: [P, D]; dI as in directional_loss. The weights are
    a softmax over the raw cosines (the reference's), with their gradient; the mean over P parts makes the
    loss about 1/P of a directional loss.
    """
    image_direction = F.normalize(F.normalize(dst_emb, dim=-1) - F.normalize(src_emb, dim=-1), dim=-1)
    cosines = image_direction @ F.normalize(part_dirs, dim=-1).T
    return ((1 - cosines) * cosines.softmax(dim=-1)).mean()


def patch_directional_loss(clip: ClipModel, img_src: Tensor, img_dst: Tensor, part_dirs: Tensor,
                           n_patches: int, patch_size: int, generator: torch.Generator | None) -> Tensor:
    """part_weighted_loss of square crops cut at the same places from source and adapted images.

    n_patches crops of patch_size pixels per image, placed uniformly by `generator` (a CPU generator;
    None: torch's global RNG); part_dirs: part_directions(...). The reference takes one 510 px crop of a
    1024 px image (ClipGuidance's default: one crop of half the shorter side).
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
    return part_weighted_loss(src_emb, clip.encode_images(crops(img_dst)), part_dirs)


class ClipGuidance:
    """The CLIP loss of one adaptation: an ensemble of CLIP models, each with a weight, and loss weights.

    loss = sum_m weight_m * (lambda_direction * directional + lambda_global * global
                             + lambda_manifold * manifold + lambda_patch * patch + lambda_indomain * indomain)
    Terms whose lambda is 0 are not computed. The target direction is the text direction of source ->
    target, or after use_image_target() the image-guided direction of each model. The patch loss always
    uses the texts (its part directions), as the reference's does.
    """

    def __init__(
        self,
        models: Sequence[tuple[ClipModel, float]],  # the ensemble: (model, weight > 0)
        *,
        source: str | None,                  # source domain text ("photo")
        target: str | None,                  # target domain text ("pencil sketch"); None: image-guided only
        lambda_direction: float = 1.0,       # directional loss weight (the method's main loss)
        lambda_global: float = 0.0,          # 1 - CLIP logits(image, "a {target}") / 100
        lambda_manifold: float = 0.0,        # L1 between image and text cosines
        lambda_patch: float = 0.0,           # part-weighted directional loss on random crops
        lambda_indomain: float = 0.0,        # angle consistency between the batch's samples (batch >= 2)
        n_patches: int = 1,                  # crops per image for the patch loss
        patch_size: int | None = None,       # crop side in pixels; None: half the image's shorter side
        seed: int = 0,                       # seeds the crop placement
        part_prompts: Sequence[str] = PART_PROMPTS,  # the patch loss's parts, "{}" where the text goes
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
        if lambda_patch > 0:
            if not part_prompts or any(p.count("{}") != 1 for p in part_prompts):
                raise ValueError(f"part_prompts: {list(part_prompts)!r}: give at least one, each with one {{}}")
            for field, text in (("source", source), ("target", target)):
                _require_text(field, text, "the patch loss (lambda_patch > 0), whose part prompts hold both texts")
                _check_fits_part_prompts(field, text, part_prompts)

        self.models = [(clip, float(weight)) for clip, weight in models]
        self.source, self.target = source, target
        self.lambda_direction, self.lambda_global = float(lambda_direction), float(lambda_global)
        self.lambda_manifold, self.lambda_patch = float(lambda_manifold), float(lambda_patch)
        self.lambda_indomain = float(lambda_indomain)
        self.n_patches, self.patch_size = n_patches, patch_size
        self.part_prompts = tuple(part_prompts)
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
            direction = self._direction(index) if self.lambda_direction else None
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
                terms.append(self.lambda_global * global_loss(dst_emb, text_emb, clip.model.logit_scale))
            if self.lambda_manifold:
                src_text = template_text_embedding(clip, self.source)
                tgt_text = template_text_embedding(clip, self.target)
                terms.append(self.lambda_manifold * manifold_loss(src_emb, dst_emb, src_text, tgt_text))
            if self.lambda_indomain:
                terms.append(self.lambda_indomain * indomain_loss(src_emb, dst_emb))
            if self.lambda_patch:
                patch_size = self.patch_size or min(img_dst.shape[-2:]) // 2
                parts = part_directions(clip, self.source, self.target, self.part_prompts)
                terms.append(self.lambda_patch * patch_directional_loss(
                    clip, img_src, img_dst, parts, self.n_patches, patch_size, self._generator))
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

    def global_text_loss(self, images: Tensor, dst_embs: Sequence[Tensor] | None = None) -> Tensor:
        """sum_m weight_m * global_loss(E_I(images), E_T(target)) against the raw target text.

        What adaptive layer selection minimises over W+ (the reference uses the text as written, no "a ").
        dst_embs: encode_images(images) per model when the caller has them already (as for `loss`).
        """
        _require_text("target", self.target, "adaptive layer selection (it optimises towards the "
                      "target text); give a target text or turn layer selection off")
        total: Tensor | None = None
        for index, (clip, weight) in enumerate(self.models):
            text_emb = _raw_text_embedding(clip, self.target)
            embeddings = clip.encode_images(images) if dst_embs is None else dst_embs[index]
            model_loss = weight * global_loss(embeddings, text_emb, clip.model.logit_scale)
            total = model_loss if total is None else total + model_loss.to(total.device)
        return total


def _require_text(field: str, value: str | None, purpose: str) -> None:
    if value is None or not value.strip():
        raise UserError(f"{field}: {value!r}: a {field} text is needed for {purpose}")


def _check_fits_part_prompts(field: str, text: str, part_prompts: Sequence[str]) -> None:
    """Refuse, before any training, a text that fits the prompt templates but not inside a part prompt too."""
    for prompt in part_prompts:
        try:
            check_prompt(prompt.format(text), field)
        except UserError:
            raise UserError(f"{field}: {quoted(text)} is too long for the patch loss (lambda_patch > 0): inside the "
                            f"part prompt {prompt!r} and the prompt templates it exceeds CLIP's "
                            f"{CONTEXT_LENGTH} tokens; shorten it or set lambda_patch to 0") from None
