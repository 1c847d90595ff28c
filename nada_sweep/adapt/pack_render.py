"""One forward pass for a pack of `full` members: each member's own weights on its own samples.

Light members share every convolution weight and render through the one frozen generator
(`params.render_packed`); full members each train their own copy, so the pack renders them here as grouped
convolutions over members, the form the straightforward modulated-conv kernel uses per sample, with one group
per member. Activations travel as [n, K * C, H, W] (member k's channels in the k-th block of C), so the FIR
filters, noise, biases and activations run once for the whole pack, and member k's images and gradients are
those its own generator's fast kernels give (to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nada_sweep.models.stylegan2 import _EPS, Generator, ModulatedConv2d, StyledConv, ToRGB, fused_leaky_relu


def render_full_packed(generators: Sequence[Generator], latent: Tensor, noise: Sequence[Tensor]) -> Tensor:
    """Images [K * n, 3, size, size] of K same-architecture generators, member k on samples k*n .. (k+1)*n - 1.

    latent: W+ [K * n, n_latent, style_dim], member-major; noise: one map [K * n, 1, h, w] per styled conv.
    """
    k, n = len(generators), latent.shape[0] // len(generators)
    if n * k != latent.shape[0]:
        raise ValueError(f"a pack of {k} full members needs the same number of samples each, got {latent.shape[0]}")
    w = latent.view(k, n, *latent.shape[1:])
    first = generators[0]
    constant = torch.stack([g.input.input[0] for g in generators])  # [K, C, 4, 4]
    out = constant.reshape(1, -1, *constant.shape[-2:]).expand(n, -1, -1, -1)
    out = _styled([g.conv1 for g in generators], out, w[:, :, 0], noise[0])
    skip = _to_rgb([g.to_rgb1 for g in generators], out, w[:, :, 1], None)
    for layer in range(len(first.to_rgbs)):
        index = 1 + 2 * layer
        out = _styled([g.convs[2 * layer] for g in generators], out, w[:, :, index], noise[index])
        out = _styled([g.convs[2 * layer + 1] for g in generators], out, w[:, :, index + 1], noise[index + 1])
        skip = _to_rgb([g.to_rgbs[layer] for g in generators], out, w[:, :, index + 2], skip)
    return skip.view(n, k, 3, *skip.shape[-2:]).transpose(0, 1).reshape(k * n, 3, *skip.shape[-2:])


def _styled(layers: Sequence[StyledConv], x: Tensor, w: Tensor, noise: Tensor) -> Tensor:
    out = _modulated([layer.conv for layer in layers], x, w)
    k, n = w.shape[:2]
    strength = torch.stack([layer.noise.weight for layer in layers]).view(1, k, 1, 1, 1)
    maps = noise.view(k, n, 1, *noise.shape[-2:]).transpose(0, 1)  # [n, K, 1, h, w]
    out = (out.view(n, k, -1, *out.shape[-2:]) + strength * maps).flatten(1, 2)
    return fused_leaky_relu(out, torch.cat([layer.activate.bias for layer in layers]))


def _to_rgb(layers: Sequence[ToRGB], x: Tensor, w: Tensor, skip: Tensor | None) -> Tensor:
    out = _modulated([layer.conv for layer in layers], x, w)
    out = out + torch.cat([layer.bias.view(3) for layer in layers]).view(1, -1, 1, 1)
    return out if skip is None else out + layers[0].upsample(skip)  # the FIR filter is per channel


def _modulated(convs: Sequence[ModulatedConv2d], x: Tensor, w: Tensor) -> Tensor:
    """The fast modulated convolution of every member at once: x [n, K * in, H, W], w [K, n, style_dim]."""
    first = convs[0]
    k, n = w.shape[:2]
    modulation = first.modulation
    mod_weight = torch.stack([conv.modulation.weight for conv in convs]) * modulation.scale  # [K, in, style_dim]
    mod_bias = torch.stack([conv.modulation.bias for conv in convs]) * modulation.lr_mul  # [K, in]
    style = torch.baddbmm(mod_bias.unsqueeze(1), w, mod_weight.transpose(1, 2))  # [K, n, in]
    weight = torch.stack([conv.weight[0] for conv in convs]) * first.scale  # [K, out, in, k, k]
    x = x * style.transpose(0, 1).reshape(n, -1, 1, 1)
    if first.upsample:
        grouped = weight.transpose(1, 2).reshape(-1, first.out_channel, first.kernel_size, first.kernel_size)
        out = first.blur(torch.nn.functional.conv_transpose2d(x, grouped, stride=2, groups=k))
    else:
        grouped = weight.reshape(-1, first.in_channel, first.kernel_size, first.kernel_size)
        out = torch.nn.functional.conv2d(x, grouped, padding=first.padding, groups=k)
    if first.demodulate:
        demod = torch.rsqrt(style.square() @ weight.square().sum((3, 4)).transpose(1, 2) + _EPS)  # [K, n, out]
        out = out * demod.transpose(0, 1).reshape(n, -1, 1, 1)
    return out
