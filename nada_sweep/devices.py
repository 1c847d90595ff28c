"""Which torch device a command or a trial runs on."""

from __future__ import annotations

import torch

from nada_sweep.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when torch sees a GPU, else CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device: {name!r} asked for, but this machine has no usable CUDA GPU (use cpu or auto)")
    return device
