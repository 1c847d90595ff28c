"""Test fixtures in the file format of NVIDIA's StyleGAN2-ADA network pickles, and a renderer in its conventions.

Written from the format (what torch_utils.persistence writes: one record per network object, holding the
class name, the source of its module and the object's attributes) and from the StyleGAN2 paper's synthesis
network, in NVIDIA's conventions: unscaled conv weights with demodulation, run-time gains stored per layer,
up-sampling convs as true convolutions of the zero-inserted and [1,3,3,1]-filtered input, per-layer constant
noise maps, w_avg as the truncation centre. Nothing here imports the project's generator: the renderer is the
independent reference the converted generator is compared against.
"""

from __future__ import annotations

import contextlib
import math
import pickle
import sys
import types
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PLACEHOLDER_SRC = "# the source of training/networks.py would be here\n"
FILTER_TAPS = [1.0, 3.0, 3.0, 1.0]
SQRT2 = math.sqrt(2.0)


@dataclass
class Record:
    """One persistent network object: pickles as a torch_utils.persistence reconstruct call."""

    class_name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Tensor] = field(default_factory=dict)
    buffers: dict[str, Tensor] = field(default_factory=dict)
    children: dict[str, Record] = field(default_factory=dict)
    module_src: str = PLACEHOLDER_SRC

    def __reduce__(self):
        state = {
            "training": False,
            "_parameters": OrderedDict((k, torch.nn.Parameter(v, requires_grad=False)) for k, v in self.params.items()),
            "_buffers": OrderedDict(self.buffers),
            "_non_persistent_buffers_set": set(),
            "_backward_hooks": OrderedDict(),
            "_forward_hooks": OrderedDict(),
            "_forward_pre_hooks": OrderedDict(),
            "_state_dict_hooks": OrderedDict(),
            "_load_state_dict_pre_hooks": OrderedDict(),
            "_modules": OrderedDict(self.children),
            **self.attrs,
            "_init_args": (),
            "_init_kwargs": EasyDict(),
        }
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self.class_name, state=state)
        return (_reconstruct_persistent_obj, (meta,))


class EasyDict(dict):
    """dnnlib's attribute dict, as the files reference it."""


EasyDict.__module__ = "dnnlib.util"


def _reconstruct_persistent_obj(meta):
    raise AssertionError("the stand-in modules only write pickles")


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"


def _stand_in_modules(reconstruct) -> dict[str, types.ModuleType]:
    modules = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib",
                                                          "dnnlib.util")}
    modules["torch_utils.persistence"]._reconstruct_persistent_obj = reconstruct
    modules["dnnlib.util"].EasyDict = EasyDict
    return modules


@contextlib.contextmanager
def nvidia_names(reconstruct=_reconstruct_persistent_obj) -> Iterator[None]:
    """Modules named like NVIDIA's for the duration, so pickle writes (or a naive reader resolves) the same
    global references their files carry; `reconstruct` stands for persistence's reconstruct function."""
    modules = _stand_in_modules(reconstruct)
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def write_pickle(path: Path, data: Any) -> Path:
    with nvidia_names(), open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def snapshot(g_ema: Record) -> dict[str, Any]:
    """What stylegan2-ada-pytorch's training loop pickles: G, D, G_ema, the data set options, augment pipe."""
    discriminator = Record("Discriminator", attrs={"c_dim": 0, "img_resolution": g_ema.attrs["img_resolution"]},
                           children={"b4": Record("DiscriminatorEpilogue", params={"fc": torch.randn(4, 4)})})
    kwargs = EasyDict(path="~/datasets/faces.zip", resolution=g_ema.attrs["img_resolution"])
    return {"G": g_ema, "D": discriminator, "G_ema": g_ema, "training_set_kwargs": kwargs, "augment_pipe": None}


# --------------------------------------------------------------------------------------------------------
# Building a random-weight generator in the format


def _fc(in_dim: int, out_dim: int, activation: str, lr_multiplier: float, bias_init: float, gen) -> Record:
    return Record("FullyConnectedLayer",
                  attrs={"activation": activation, "weight_gain": np.float64(lr_multiplier / np.sqrt(in_dim)),
                         "bias_gain": lr_multiplier},
                  params={"weight": torch.randn(out_dim, in_dim, generator=gen) / lr_multiplier,
                          "bias": bias_init + 0.2 * torch.randn(out_dim, generator=gen)})


def _filter() -> Tensor:
    taps = torch.tensor(FILTER_TAPS)
    kernel = taps[:, None] * taps[None, :]
    return kernel / kernel.sum()


def _synthesis_layer(cin: int, cout: int, w_dim: int, res: int, up: int, use_noise: bool, clamp, gen) -> Record:
    params = {"weight": torch.randn(cout, cin, 3, 3, generator=gen), "bias": 0.2 * torch.randn(cout, generator=gen)}
    buffers = {"resample_filter": _filter()}
    if use_noise:
        params["noise_strength"] = torch.rand((), generator=gen) + 0.2
        buffers["noise_const"] = torch.randn(res, res, generator=gen)
    return Record("SynthesisLayer",
                  attrs={"resolution": res, "up": up, "use_noise": use_noise, "activation": "lrelu",
                         "conv_clamp": clamp, "padding": 1, "act_gain": SQRT2},
                  params=params, buffers=buffers,
                  children={"affine": _fc(w_dim, cin, "linear", 1, 1.0, gen)})


def _to_rgb(cin: int, w_dim: int, clamp, gen) -> Record:
    return Record("ToRGBLayer", attrs={"conv_clamp": clamp, "weight_gain": np.float64(1 / np.sqrt(cin))},
                  params={"weight": torch.randn(3, cin, 1, 1, generator=gen), "bias": torch.randn(3, generator=gen)},
                  children={"affine": _fc(w_dim, cin, "linear", 1, 1.0, gen)})


def build_generator(resolution: int = 32, w_dim: int = 32, mapping_layers: int = 8, channel_base: int = 512,
                    channel_max: int = 32, lr_multiplier: float = 0.01, use_noise: bool = True,
                    conv_clamp: float | None = 256, seed: int = 0, module_src: str = PLACEHOLDER_SRC) -> Record:
    """A random-weight StyleGAN2-ADA G_ema record (biases, noise strengths and w_avg non-zero so they matter)."""
    gen = torch.Generator().manual_seed(seed)
    resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
    channels = {res: min(channel_base // res, channel_max) for res in resolutions}
    blocks = {}
    for res in resolutions:
        cout = channels[res]
        cin = channels[res // 2] if res > 4 else 0
        block = Record("SynthesisBlock",
                       attrs={"in_channels": cin, "w_dim": w_dim, "resolution": res, "img_channels": 3,
                              "is_last": res == resolution, "architecture": "skip", "use_fp16": False,
                              "channels_last": False, "num_conv": 1 if res == 4 else 2, "num_torgb": 1},
                       buffers={"resample_filter": _filter()})
        if res == 4:
            block.params["const"] = torch.randn(cout, 4, 4, generator=gen)
        else:
            block.children["conv0"] = _synthesis_layer(cin, cout, w_dim, res, 2, use_noise, conv_clamp, gen)
        block.children["conv1"] = _synthesis_layer(cout, cout, w_dim, res, 1, use_noise, conv_clamp, gen)
        block.children["torgb"] = _to_rgb(cout, w_dim, conv_clamp, gen)
        blocks[f"b{res}"] = block
    num_ws = 2 * len(resolutions)
    synthesis = Record("SynthesisNetwork",
                       attrs={"w_dim": w_dim, "img_resolution": resolution, "img_resolution_log2": len(resolutions) + 1,
                              "img_channels": 3, "block_resolutions": resolutions, "num_ws": num_ws},
                       children=blocks)
    mapping = Record("MappingNetwork",
                     attrs={"z_dim": w_dim, "c_dim": 0, "w_dim": w_dim, "num_ws": num_ws,
                            "num_layers": mapping_layers, "w_avg_beta": 0.995},
                     buffers={"w_avg": torch.randn(w_dim, generator=gen)},
                     children={f"fc{i}": _fc(w_dim, w_dim, "lrelu", lr_multiplier, 0.0, gen)
                               for i in range(mapping_layers)})
    generator = Record("Generator",
                       attrs={"z_dim": w_dim, "c_dim": 0, "w_dim": w_dim, "img_resolution": resolution,
                              "img_channels": 3, "num_ws": num_ws},
                       children={"synthesis": synthesis, "mapping": mapping})
    for record in _records(generator):
        record.module_src = module_src
    return generator


def _records(record: Record) -> Iterator[Record]:
    yield record
    for child in record.children.values():
        yield from _records(child)


# --------------------------------------------------------------------------------------------------------
# Rendering in NVIDIA's conventions (noise_mode='const', fp32)


def _upfirdn(x: Tensor, kernel: Tensor, up: int, pad: tuple[int, int], gain: float) -> Tensor:
    """Zero-insert `up`x, pad (before, after), then convolve every channel with the filter x gain."""
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    taps = (kernel * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(x, taps, groups=c)


def _linear(layer: Record, x: Tensor) -> Tensor:
    weight = layer.params["weight"] * layer.attrs["weight_gain"]
    out = x @ weight.t() + layer.params["bias"] * layer.attrs["bias_gain"]
    return F.leaky_relu(out, 0.2) * SQRT2 if layer.attrs["activation"] == "lrelu" else out


def _modulated(x: Tensor, weight: Tensor, styles: Tensor, demodulate: bool, up: int, kernel: Tensor) -> Tensor:
    outputs = []
    for sample, style in zip(x.split(1), styles):
        w = weight * style[None, :, None, None]
        if demodulate:
            w = w * torch.rsqrt(w.square().sum([1, 2, 3]) + 1e-8)[:, None, None, None]
        if up == 1:
            outputs.append(F.conv2d(sample, w, padding=w.shape[-1] // 2))  # correlation, like conv2d
        else:
            # padding 1 of the 3x3 conv plus the filter's, all applied once to the up-sampled input; then a
            # true convolution with the kernel
            padded = _upfirdn(sample, kernel, up=2, pad=(1 + 2, 1 + 1), gain=4)
            outputs.append(F.conv2d(padded, w.flip([2, 3])))
    return torch.cat(outputs)


def _synthesis_layer_forward(layer: Record, x: Tensor, w: Tensor) -> Tensor:
    x = _modulated(x, layer.params["weight"], _linear(layer.children["affine"], w), True, layer.attrs["up"],
                   layer.buffers["resample_filter"])
    if layer.attrs["use_noise"]:
        x = x + layer.buffers["noise_const"] * layer.params["noise_strength"]
    x = F.leaky_relu(x + layer.params["bias"][None, :, None, None], 0.2) * layer.attrs["act_gain"]
    clamp = layer.attrs["conv_clamp"]
    return x.clamp(-clamp, clamp) if clamp is not None else x


def _to_rgb_forward(layer: Record, x: Tensor, w: Tensor) -> Tensor:
    styles = _linear(layer.children["affine"], w) * layer.attrs["weight_gain"]
    x = _modulated(x, layer.params["weight"], styles, False, 1, None) + layer.params["bias"][None, :, None, None]
    clamp = layer.attrs["conv_clamp"]
    return x.clamp(-clamp, clamp) if clamp is not None else x


def render(g: Record, z: Tensor, psi: float = 1.0) -> Tensor:
    """Images of `z` with truncation `psi` towards w_avg and each layer's constant noise."""
    mapping, synthesis = g.children["mapping"], g.children["synthesis"]
    x = z * torch.rsqrt(z.square().mean(1, keepdim=True) + 1e-8)
    for i in range(mapping.attrs["num_layers"]):
        x = _linear(mapping.children[f"fc{i}"], x)
    w_avg = mapping.buffers["w_avg"]
    ws = (w_avg + psi * (x - w_avg))[:, None].repeat(1, synthesis.attrs["num_ws"], 1)
    x = img = None
    index = 0  # each block reads its convs' ws and the next one for its ToRGB
    for res in synthesis.attrs["block_resolutions"]:
        block = synthesis.children[f"b{res}"]
        if res == 4:
            x = block.params["const"][None].repeat(z.shape[0], 1, 1, 1)
            x = _synthesis_layer_forward(block.children["conv1"], x, ws[:, 0])
        else:
            x = _synthesis_layer_forward(block.children["conv0"], x, ws[:, index])
            x = _synthesis_layer_forward(block.children["conv1"], x, ws[:, index + 1])
        index += block.attrs["num_conv"]
        rgb = _to_rgb_forward(block.children["torgb"], x, ws[:, index])
        img = rgb if img is None else _upfirdn(img, block.buffers["resample_filter"], 2, (2, 1), 4) + rgb
    return img


# --------------------------------------------------------------------------------------------------------
# Other networks in the same format


def stylegan3_like(seed: int = 0) -> Record:
    """A StyleGAN3 G_ema's outline: its synthesis starts from Fourier features (SynthesisInput)."""
    gen = torch.Generator().manual_seed(seed)
    synthesis_input = Record("SynthesisInput", buffers={"freqs": torch.randn(8, 2, generator=gen),
                                                        "phases": torch.rand(8, generator=gen)})
    synthesis = Record("SynthesisNetwork", children={"input": synthesis_input,
                                                     "L0_36_512": Record("SynthesisLayer")})
    return Record("Generator", attrs={"z_dim": 8, "c_dim": 0, "w_dim": 8, "img_resolution": 16, "img_channels": 3},
                  children={"synthesis": synthesis, "mapping": Record("MappingNetwork")})


def stylegan_xl_like() -> Record:
    """A StyleGAN-XL G_ema's outline: a super-resolution generator around a class-embedding mapping."""
    mapping = Record("MappingNetwork", children={"embed_proj": Record("FullyConnectedLayer")})
    stem = Record("Generator", children={"mapping": mapping, "synthesis": Record("SynthesisNetwork")})
    return Record("SuperresGenerator", children={"mapping": mapping, "synthesis": stem})
