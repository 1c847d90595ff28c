"""The perceptual term of the inversion loss: LPIPS when its weights are on this machine, else CLIP features.

LPIPS (the `lpips` package, VGG trunk, as the StyleGAN2 projectors use) needs torchvision's ImageNet VGG16
weights in torch's hub cache; its own linear layers ship inside the package. Nothing here downloads: without
the file the CLIP-feature term (1 - cosine of CLIP image embeddings) runs instead, and the choice is named
in the terminal and in the latents file.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from nada_sweep.errors import UserError
from nada_sweep.models.clip_models import load_clip

PerceptualChoice = Literal["auto", "lpips", "clip", "none"]
LPIPS_SIZE = 256  # images larger than this are average-pooled down first, as the projectors do


@dataclass
class Perceptual:
    name: str  # shown to the user and stored in the latents file
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None  # per-image distance, None: no term
    why: str = ""  # why this term ran (e.g. the LPIPS weights file that is missing)


def lpips_weights_file(net: str = "vgg") -> Path:
    """Where torchvision keeps the ImageNet trunk LPIPS builds on (torch.hub's cache; TORCH_HOME moves it)."""
    from torchvision import models

    weights = {"vgg": models.VGG16_Weights, "alex": models.AlexNet_Weights,
               "squeeze": models.SqueezeNet1_1_Weights}[net].IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def lpips_missing(net: str = "vgg") -> str | None:
    """Why LPIPS cannot run here, or None when it can."""
    if importlib.util.find_spec("lpips") is None:
        return "the lpips package is not installed (pip install 'nada-sweep[media]')"
    file = lpips_weights_file(net)
    if not file.is_file():
        return f"its {net} weights are not on this machine ({file})"
    return None


def _pooled(images: torch.Tensor) -> torch.Tensor:
    size = images.shape[-1]
    return F.adaptive_avg_pool2d(images, LPIPS_SIZE) if size > LPIPS_SIZE else images


def lpips_term(device: torch.device, net: str = "vgg") -> Perceptual:
    import lpips

    with warnings.catch_warnings():
        # lpips asks torchvision for its trunk with the `pretrained=` argument torchvision deprecated; the
        # warning is about lpips's code, not anything a user can change
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net=net, verbose=False)
    model = model.to(device).eval().requires_grad_(False)
    return Perceptual(f"lpips ({net})", lambda a, b: model(_pooled(a), _pooled(b)).flatten())


def clip_term(name: str, device: torch.device) -> Perceptual:
    model = load_clip(name, device)

    def distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - F.cosine_similarity(model.encode_images(a), model.encode_images(b), dim=-1)

    return Perceptual(f"clip features ({model.name})", distance)


def choose_perceptual(choice: PerceptualChoice, clip_name: str, device: torch.device, net: str = "vgg") -> Perceptual:
    """The term `choice` asks for; "auto" is LPIPS when it can run here, else CLIP features."""
    if choice == "none":
        return Perceptual("none", None)
    if choice in ("auto", "lpips"):
        missing = lpips_missing(net)
        if missing is None:
            return lpips_term(device, net)
        if choice == "lpips":
            raise UserError(f"--perceptual lpips: LPIPS cannot run: {missing}; copy the file there, or use "
                            "--perceptual clip")
        term = clip_term(clip_name, device)
        term.why = f"LPIPS unavailable: {missing}"
        return term
    if choice == "clip":
        return clip_term(clip_name, device)
    raise UserError(f"--perceptual: {choice!r}; choose auto, lpips, clip or none")
