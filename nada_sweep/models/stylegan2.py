"""StyleGAN2 generator in plain PyTorch, state-dict compatible with rosinality/stylegan2-pytorch.

Parameter names, shapes and the forward() contract follow rosinality's layout so checkpoints move freely
between this project, StyleGAN-NADA and other StyleGAN2 tools. No compiled ops: everything is expressed
with torch convolutions and runs on CPU and CUDA.

Two kernel modes compute the same function (parity-tested to float rounding):
- fast (default): the modulated conv scales the input by the style, runs one shared-weight conv over the
  whole batch and scales the output by the demodulation coefficients; FIR filtering (blur, upsample) is a
  depthwise conv on (N, C, H, W), with up-sampling done by a strided transposed conv.
- straightforward: the per-sample weights are built explicitly and applied with a grouped conv, and FIR
  filtering runs on (N*C, 1, H, W) after explicit zero insertion: a direct reading of the paper, kept as
  the reference the fast path is tested against.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

# Channels per resolution of rosinality's Generator; resolutions >= 64 scale with channel_multiplier.
_BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)  # keeps activation variance ~1 after the leaky ReLU
_EPS = 1e-8


def channel_table(
    size: int, channel_multiplier: int = 2, channels: Mapping[int, int] | None = None
) -> dict[int, int]:
    """Feature channels per resolution 4..size: `channels` validated if given, else rosinality's table."""
    resolutions = _resolutions(size)
    if channels is not None:
        missing = [r for r in resolutions if r not in channels]
        if missing:
            raise ValueError(f"channels: no entry for resolution(s) {missing}; need {resolutions}")
        bad = {r: c for r, c in channels.items() if not isinstance(c, int) or c < 1}
        if bad:
            raise ValueError(f"channels: counts must be positive integers, got {bad}")
        return {int(r): int(c) for r, c in channels.items()}
    table = {}
    for res in resolutions:
        if res not in _BASE_CHANNELS:
            raise ValueError(
                f"size={size}: no default channel count for resolution {res}; pass channels= explicitly"
            )
        table[res] = _BASE_CHANNELS[res] * (1 if res <= 32 else channel_multiplier)
    return table


def _resolutions(size: int) -> list[int]:
    if not isinstance(size, int) or size < 4 or size & (size - 1):
        raise ValueError(f"size={size}: must be a power of two >= 4")
    return [2**i for i in range(2, int(math.log2(size)) + 1)]


def make_kernel(taps: Sequence[float]) -> Tensor:
    """2-D FIR kernel normalised to sum 1; a 1-D tap list becomes its outer product."""
    k = torch.tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def fused_leaky_relu(x: Tensor, bias: Tensor) -> Tensor:
    """leaky_relu(x + bias, 0.2) * sqrt(2), with bias broadcast over channel dim 1."""
    shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), _LRELU_SLOPE) * _LRELU_GAIN


# --------------------------------------------------------------------------------------------------------
# FIR filtering (upfirdn2d without the down-sampling step, which the generator never needs)


def upfir2d_reference(x: Tensor, kernel: Tensor, up: int, pad: tuple[int, int]) -> Tensor:
    """Zero-insert `up`x, pad (pad0, pad1) on both axes, then filter with `kernel` (true convolution).

    Runs on (N*C, 1, H, W) exactly as the operation is defined; the reference for `upfir2d_fast`.
    """
    n, c, h, w = x.shape
    out = x.reshape(n * c, 1, h, 1, w, 1)
    out = F.pad(out, [0, up - 1, 0, 0, 0, up - 1])  # zeros after each sample, both axes
    out = out.reshape(n * c, 1, h * up, w * up)
    out = F.pad(out, [pad[0], pad[1], pad[0], pad[1]])
    # conv2d is a correlation; flipping turns it into the convolution that defines the filter
    out = F.conv2d(out, torch.flip(kernel, [0, 1])[None, None])
    return out.reshape(n, c, out.shape[-2], out.shape[-1])


def upfir2d_fast(x: Tensor, kernel: Tensor, up: int, pad: tuple[int, int]) -> Tensor:
    """Same result as `upfir2d_reference`, as one depthwise conv on (N, C, H, W).

    Up-sampling uses a strided transposed conv, which fuses zero insertion and filtering (no zeros are
    ever multiplied). Splitting a separable kernel into two 1-D passes was measured slower on CPU
    (two passes over memory against one 4x4 depthwise kernel), so the 2-D kernel is used as is.
    """
    c = x.shape[1]
    k = kernel.shape[0]
    weight = kernel[None, None].expand(c, 1, k, k)
    if up == 1:
        if pad[0] != pad[1]:
            x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
            pad = (0, 0)
        # correlation with the flipped kernel == the filter's convolution
        return F.conv2d(x, torch.flip(weight, [2, 3]), padding=pad[0], groups=c)

    # conv_transpose2d(stride=up) gives the full convolution of the zero-inserted input; the window the
    # definition keeps starts (k - 1 - pad0) samples in and ends (up + pad1 - k) samples past its end.
    crop0 = k - 1 - pad[0]
    extend1 = up + pad[1] - k
    if crop0 == -extend1 and crop0 >= 0:
        return F.conv_transpose2d(x, weight, stride=up, padding=crop0, groups=c)
    x = F.conv_transpose2d(x, weight, stride=up, groups=c)
    return F.pad(x, [-crop0, extend1, -crop0, extend1])  # negative pads crop


class _FIRFilter(nn.Module):
    """Holds the 2-D `kernel` buffer (a checkpoint key) and runs it in the selected kernel mode."""

    def __init__(self, taps: Sequence[float], up: int, pad: tuple[int, int], gain: float):
        super().__init__()
        self.register_buffer("kernel", make_kernel(taps) * gain)
        self.up = up
        self.pad = pad
        self.fast = True

    def forward(self, x: Tensor) -> Tensor:
        if self.fast:
            return upfir2d_fast(x, self.kernel, self.up, self.pad)
        return upfir2d_reference(x, self.kernel, self.up, self.pad)


class Upsample(_FIRFilter):
    """2x up-sampling of the RGB skip branch; the kernel is scaled by 4 to keep the signal's mean."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        p = len(taps) - factor
        super().__init__(taps, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2), gain=factor**2)


class Blur(_FIRFilter):
    """Low-pass filter after a transposed conv (that conv inserted the zeros, so gain factor**2)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__(taps, up=1, pad=pad, gain=upsample_factor**2)


# --------------------------------------------------------------------------------------------------------
# Layers


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x * x, dim=1, keepdim=True) + _EPS)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights are stored ~N(0, 1/lr_mul²) and scaled at run
    time, so Adam's per-parameter step is uniform across layers; lr_mul slows the mapping network."""

    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0, activation: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class FusedLeakyReLU(nn.Module):
    """Per-channel bias followed by a gain-corrected leaky ReLU (the bias lives here, not in the conv)."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled per sample by an affine map of w, optionally demodulated so
    each output channel has unit expected variance (StyleGAN2's replacement for AdaIN)."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
    ):
        super().__init__()
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        self.fast = True
        if upsample:
            factor = 2
            # pads that make (transposed conv -> blur) produce exactly 2x the input size
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        # bias 1 so that an untrained style starts as the identity modulation
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, upsample={self.upsample}, "
            f"demodulate={self.demodulate}"
        )

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        style = self.modulation(w)
        if self.fast:
            return self._forward_fast(x, style)
        return self._forward_grouped(x, style)

    def _forward_fast(self, x: Tensor, style: Tensor) -> Tensor:
        batch = x.shape[0]
        weight = self.weight[0] * self.scale  # [out, in, k, k]
        x = x * style.view(batch, self.in_channel, 1, 1)
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2)
            out = self.blur(out)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum over (in, kh, kw) of (weight * style)^2, without materialising per-sample weights
            demod = torch.rsqrt(style.square() @ weight.square().sum((2, 3)).t() + _EPS)
            out = out * demod.view(batch, self.out_channel, 1, 1)
        return out

    def _forward_grouped(self, x: Tensor, style: Tensor) -> Tensor:
        batch, in_channel, height, width = x.shape
        k = self.kernel_size
        weight = self.scale * self.weight * style.view(batch, 1, in_channel, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.square().sum((2, 3, 4)) + _EPS)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        x = x.reshape(1, batch * in_channel, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            out = out.view(batch, self.out_channel, out.shape[-2], out.shape[-1])
            return self.blur(out)
        weight = weight.view(batch * self.out_channel, in_channel, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_channel, out.shape[-2], out.shape[-1])


class NoiseInjection(nn.Module):
    """Adds per-pixel noise (shared across channels) with a learned per-layer strength."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None = None) -> Tensor:
        if noise is None:
            batch, _, height, width = x.shape
            noise = x.new_empty(batch, 1, height, width).normal_()
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 tensor the synthesis network starts from."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, latent: Tensor) -> Tensor:
        return self.input.repeat(latent.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise -> bias + leaky ReLU."""

    def __init__(
        self,
        in_channel: int,
        out_channel: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = (1, 3, 3, 1),
        demodulate: bool = True,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim,
            demodulate=demodulate, upsample=upsample, blur_kernel=blur_kernel,
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, w), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB, added to the up-sampled RGB of the previous block."""

    def __init__(
        self, in_channel: int, style_dim: int, upsample: bool = True, blur_kernel: Sequence[float] = (1, 3, 3, 1)
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, w: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


# --------------------------------------------------------------------------------------------------------
# Generator


def noise_resolution(layer_idx: int) -> int:
    """Side of noise map `layer_idx`: 4, 8, 8, 16, 16, ... (conv1, then two convs per resolution)."""
    return 2 ** ((layer_idx + 5) // 2)


class Generator(nn.Module):
    """StyleGAN2 generator (config-f): mapping network `style` and synthesis network, rosinality layout."""

    def __init__(
        self,
        size: int,  # output resolution in pixels (power of two >= 4)
        style_dim: int = 512,  # width of z and w
        n_mlp: int = 8,  # layers in the mapping network
        channel_multiplier: int = 2,  # scales channels at resolutions >= 64 (ignored when channels is given)
        blur_kernel: Sequence[float] = (1, 3, 3, 1),  # 1-D taps of the up-sampling low-pass filter
        lr_mlp: float = 0.01,  # learning-rate multiplier of the mapping network
        channels: Mapping[int, int] | None = None,  # explicit resolution -> channels table (small models)
    ):
        super().__init__()
        self.channels = channel_table(size, channel_multiplier, channels)
        if style_dim < 1 or n_mlp < 0:
            raise ValueError(f"style_dim={style_dim}, n_mlp={n_mlp}: need style_dim >= 1 and n_mlp >= 0")

        self.size = size
        self.style_dim = style_dim
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1  # styled convs, one noise map each
        self.n_latent = self.log_size * 2 - 2  # w vectors consumed: one per conv plus the last ToRGB

        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation=True) for _ in range(n_mlp)],
        )

        ch = self.channels
        self.input = ConstantInput(ch[4])
        self.conv1 = StyledConv(ch[4], ch[4], 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(ch[4], style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # unused; kept because rosinality's Generator has it
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = noise_resolution(layer_idx)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))

        in_channel = ch[4]
        for res in _resolutions(size)[1:]:
            out_channel = ch[res]
            self.convs.append(
                StyledConv(in_channel, out_channel, 3, style_dim, upsample=True, blur_kernel=blur_kernel)
            )
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channel, style_dim, blur_kernel=blur_kernel))
            in_channel = out_channel

    def set_fast_kernels(self, enabled: bool) -> None:
        """Choose the fast kernels (default) or the straightforward grouped-conv reference kernels."""
        for module in self.modules():
            if isinstance(module, (ModulatedConv2d, _FIRFilter)):
                module.fast = bool(enabled)

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh noise maps, one per styled conv, on the generator's device.

        With a (CPU) `generator` the maps are drawn from it, so they depend on its seed only.
        """
        device = self.input.input.device
        maps = []
        for i in range(self.num_layers):
            res = noise_resolution(i)
            if generator is None:
                maps.append(torch.randn(batch, 1, res, res, device=device))
            else:
                maps.append(torch.randn(batch, 1, res, res, generator=generator).to(device))
        return maps

    def mean_latent(self, n_latent: int) -> Tensor:
        """Mean w over n_latent random z: the truncation centre, shape [1, style_dim]."""
        z = torch.randn(n_latent, self.style_dim, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: Tensor) -> Tensor:
        return self.style(z)

    def forward(
        self,
        styles: list[Tensor],
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1,
        truncation_latent: Tensor | None = None,
        input_is_latent: bool = False,
        noise: Sequence[Tensor | None] | None = None,
        randomize_noise: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """Render images in [-1, 1]-ish range, shape [N, 3, size, size].

        styles: one or two [N, style_dim] z (w if input_is_latent); two means style mixing at
        inject_index (random when None). With input_is_latent a single [N, n_latent, style_dim] W+ tensor
        is used as is. noise: one map (or None for fresh noise) per styled conv; when not given, the
        stored `noises` buffers are used if randomize_noise is False, otherwise fresh noise.
        Returns (image, W+ latent if return_latents else None).
        """
        if not input_is_latent:
            styles = [self.style(s) for s in styles]

        if noise is None:
            if randomize_noise:
                noise = [None] * self.num_layers
            else:
                noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

        if truncation < 1:
            styles = [truncation_latent + truncation * (s - truncation_latent) for s in styles]

        if len(styles) < 2:
            latent = styles[0] if styles[0].ndim >= 3 else styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            latent = torch.cat(
                [
                    styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                    styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1),
                ],
                1,
            )

        out = self.input(latent)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for up_conv, conv, noise1, noise2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
        ):
            out = up_conv(out, latent[:, i], noise=noise1)
            out = conv(out, latent[:, i + 1], noise=noise2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2

        return skip, (latent if return_latents else None)
