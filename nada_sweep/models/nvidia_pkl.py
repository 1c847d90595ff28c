"""NVIDIA StyleGAN2-ADA network pickles (NVlabs/stylegan2-ada-pytorch, .pkl) -> a rosinality state dict.

The file is read by models/safe_pickle.py, so nothing in it runs; `G_ema` is then mapped onto rosinality's
parameter layout. Both implementations compute the same function, with these differences in how the numbers
are stored:
- gains: NVIDIA keeps each layer's run-time weight/bias gains as attributes (weight_gain, bias_gain), rosinality
  derives them from fan-in and lr_mul; weights are rescaled so that gain x stored value is unchanged, whatever
  lr multiplier the file was trained with.
- synthesis convs: NVIDIA stores them unscaled (demodulation removes any scale), rosinality scales by
  1/sqrt(fan-in) before demodulating: the same weights give the same output.
- up-sampling convs: NVIDIA runs them as true convolutions (transposed conv without flipping), as rosinality's
  transposed conv does, so the kernels map unflipped; both filter with [1,3,3,1] as a convolution, rosinality
  storing the filter pre-multiplied by the up-sampling gain 4.
- noise: NVIDIA's noise_const [res, res] and scalar noise_strength become rosinality's noise buffers
  [1, 1, res, res] and NoiseInjection weights [1]; mapping.w_avg becomes latent_avg.
Not carried over: conv_clamp (NVIDIA clips activations at +-256 x gain, a guard for fp16 that trained
generators stay far inside) and fp16 execution (NVIDIA runs the top resolutions in fp16 on GPU; here all is
fp32, which matches NVIDIA's output on CPU or with force_fp32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nada_sweep.errors import UserError
from nada_sweep.models import safe_pickle
from nada_sweep.models.safe_pickle import PersistentRecord

MAPPING_LR_MUL = 0.01  # rosinality's Generator(lr_mlp=0.01), fixed by the layout (not stored in its files)
_LRELU = "lrelu"
_FILTER_GAIN = 4  # rosinality stores the 2x up-sampling filters multiplied by up**2


@dataclass
class ConvertedGenerator:
    state_dict: dict[str, Tensor]  # rosinality generator layout
    latent_avg: Tensor | None  # mapping.w_avg, [w_dim]


def read_generator_pkl(path: Path) -> ConvertedGenerator:
    """The G_ema generator of an NVIDIA StyleGAN2-ADA pickle, in rosinality's layout; UserError otherwise."""
    try:
        loaded = safe_pickle.load(path)
    except safe_pickle.PickleReadError as exc:
        if exc.foreign:
            _refuse_foreign(path, exc.foreign)
        if exc.not_a_pickle:
            raise UserError(f"{path}: not a network pickle ({exc.reason})") from None
        raise UserError(
            f"{path}: not a readable network pickle (truncated or corrupt?): unpickling failed ({exc.reason})"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read generator file ({exc.strerror or exc})") from None

    _refuse_other_families(path, loaded)
    if loaded.foreign:
        _refuse_foreign(path, loaded.foreign)
    generator = _find_g_ema(path, loaded.value)
    return _Converter(f"{path} [G_ema]").convert(generator)


# --------------------------------------------------------------------------------------------------------
# What the file is


def _refuse_other_families(path: Path, loaded: safe_pickle.SafeLoad) -> None:
    records = [item for item in safe_pickle.walk(loaded.value) if isinstance(item, PersistentRecord)]
    names = {record.class_name for record in records}
    only_sg2 = ("only StyleGAN2 / StyleGAN2-ADA generators (NVlabs/stylegan2-ada-pytorch, or the stylegan2 "
                "configs of NVlabs/stylegan3) map onto rosinality's layer layout, which StyleGAN-NADA's layer "
                "selection is defined on")
    if "SuperresGenerator" in names or any("embed_proj" in r.children for r in records):
        raise UserError(f"{path}: a StyleGAN-XL generator (super-resolution stages, class-embedding mapping); "
                        f"{only_sg2}")
    if "SynthesisInput" in names:
        raise UserError(f"{path}: a StyleGAN3 generator (alias-free synthesis from Fourier features, "
                        f"'SynthesisInput'); {only_sg2}")


def _refuse_foreign(path: Path, foreign: list[str]) -> None:
    tf_names = [name for name in foreign if name.startswith("dnnlib.tflib.")]
    if tf_names:
        raise UserError(
            f"{path}: a TensorFlow StyleGAN/StyleGAN2 pickle ({tf_names[0]}); convert it to PyTorch first, e.g. "
            "with NVlabs/stylegan2-ada-pytorch's `python legacy.py --source IN.pkl --dest OUT.pkl`, then use "
            "OUT.pkl here (or `nada-sweep convert OUT.pkl OUT.pt`)"
        )
    shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
    raise UserError(
        f"{path}: refused: this pickle wants to run code when loaded (it calls or builds {shown}). Only "
        "tensors, numpy arrays, plain containers and NVIDIA's persistence records are read from a .pkl, as "
        "data; nothing from the file was executed. Use a generator from a source you trust, or one saved as a "
        "state dict (.pt)"
    )


def _find_g_ema(path: Path, value: Any) -> PersistentRecord:
    if isinstance(value, dict) and "G_ema" in value:
        generator = value["G_ema"]
    elif isinstance(value, PersistentRecord):
        generator = value  # a bare network pickled on its own
    else:
        found = list(value)[:8] if isinstance(value, dict) else type(value).__name__
        raise UserError(f"{path}: not a StyleGAN2-ADA network pickle: expected a dict with 'G_ema' (as "
                        f"stylegan2-ada-pytorch's training writes), found {found}")
    if not isinstance(generator, PersistentRecord) or generator.class_name != "Generator":
        kind = generator.class_name if isinstance(generator, PersistentRecord) else type(generator).__name__
        raise UserError(f"{path}: 'G_ema' is a {kind!r}, not a StyleGAN2-ADA Generator")
    return generator


# --------------------------------------------------------------------------------------------------------
# The mapping onto rosinality's names


class _Converter:
    def __init__(self, source: str):
        self.source = source
        self.out: dict[str, Tensor] = {}

    def fail(self, where: str, problem: str) -> UserError:
        return UserError(f"{self.source}: {where}: {problem}")

    def child(self, record: PersistentRecord, name: str, where: str) -> PersistentRecord:
        child = record.children.get(name)
        if not isinstance(child, PersistentRecord):
            raise self.fail(where, f"no layer {name!r} (found {sorted(record.children)}); not a StyleGAN2-ADA "
                            "generator, or a damaged one")
        return child

    def tensor(self, record: PersistentRecord, name: str, where: str) -> Tensor:
        value = record.tensors().get(name)
        if not isinstance(value, Tensor):
            raise self.fail(where, f"no tensor {name!r}" + (" (None)" if name in record.tensors() else ""))
        return value.detach().to(torch.float32).contiguous().clone()

    def attr(self, record: PersistentRecord, name: str, where: str) -> Any:
        if name not in record.state:
            raise self.fail(where, f"no attribute {name!r}; not a StyleGAN2-ADA layer")
        return record.state[name]

    def convert(self, g: PersistentRecord) -> ConvertedGenerator:
        z_dim, c_dim, w_dim = (int(self.attr(g, key, "G_ema")) for key in ("z_dim", "c_dim", "w_dim"))
        channels = int(self.attr(g, "img_channels", "G_ema"))
        if c_dim:
            raise self.fail("G_ema", f"a class-conditional generator (c_dim={c_dim}); rosinality's layout has "
                            "no label input")
        if channels != 3:
            raise self.fail("G_ema", f"img_channels={channels}; rosinality's layout renders RGB (3)")
        if z_dim != w_dim:
            raise self.fail("G_ema", f"z_dim={z_dim} differs from w_dim={w_dim}; rosinality's layout uses one "
                            "style_dim for both")
        latent_avg = self.mapping(self.child(g, "mapping", "G_ema"), w_dim)
        self.synthesis(self.child(g, "synthesis", "G_ema"), int(self.attr(g, "img_resolution", "G_ema")))
        return ConvertedGenerator(state_dict=self.out, latent_avg=latent_avg)

    def mapping(self, mapping: PersistentRecord, w_dim: int) -> Tensor | None:
        n_layers = 0
        while f"fc{n_layers}" in mapping.children:
            where = f"mapping.fc{n_layers}"
            layer = self.child(mapping, f"fc{n_layers}", "mapping")
            if self.attr(layer, "activation", where) != _LRELU:
                raise self.fail(where, f"activation {layer.state['activation']!r}; rosinality's mapping uses "
                                f"{_LRELU!r}")
            weight, bias = self.linear(layer, where, MAPPING_LR_MUL)
            if tuple(weight.shape) != (w_dim, w_dim):
                raise self.fail(where, f"weight of shape {tuple(weight.shape)}; rosinality's mapping layers are "
                                f"{w_dim} x {w_dim}")
            self.out[f"style.{n_layers + 1}.weight"], self.out[f"style.{n_layers + 1}.bias"] = weight, bias
            n_layers += 1
        w_avg = mapping.tensors().get("w_avg")
        return w_avg.detach().to(torch.float32).clone() if isinstance(w_avg, Tensor) else None

    def linear(self, layer: PersistentRecord, where: str, lr_mul: float) -> tuple[Tensor, Tensor]:
        """NVIDIA's stored (weight, bias) and gains -> rosinality's values for EqualLinear(lr_mul)."""
        weight = self.tensor(layer, "weight", where)
        bias = self.tensor(layer, "bias", where)
        weight_gain = float(self.attr(layer, "weight_gain", where))
        bias_gain = float(self.attr(layer, "bias_gain", where))
        # rosinality multiplies by lr_mul / sqrt(fan_in) (weight) and lr_mul (bias) at run time
        return weight * (weight_gain * math.sqrt(weight.shape[1]) / lr_mul), bias * (bias_gain / lr_mul)

    def synthesis(self, synthesis: PersistentRecord, size: int) -> None:
        resolutions = [2**i for i in range(2, int(math.log2(size)) + 1)]
        if size < 4 or 2 ** (len(resolutions) + 1) != size:
            raise self.fail("synthesis", f"img_resolution={size} is not a power of two >= 4")
        for index, res in enumerate(resolutions):
            where = f"synthesis.b{res}"
            block = self.child(synthesis, f"b{res}", "synthesis")
            architecture = self.attr(block, "architecture", where)
            if architecture != "skip":
                raise self.fail(where, f"architecture {architecture!r}; rosinality's generator is the 'skip' "
                                "architecture (config-f, paper256/512/1024, auto all are)")
            if res == 4:
                self.out["input.input"] = self.tensor(block, "const", where)[None]
                self.styled_conv(self.child(block, "conv1", where), f"{where}.conv1", "conv1", 0, up=1)
                self.to_rgb(block, where, "to_rgb1", upsample=False)
                continue
            first = 2 * (index - 1)  # rosinality's convs: [up-conv, conv] per resolution above 4
            self.styled_conv(self.child(block, "conv0", where), f"{where}.conv0", f"convs.{first}", first + 1, up=2)
            self.styled_conv(self.child(block, "conv1", where), f"{where}.conv1", f"convs.{first + 1}", first + 2,
                             up=1)
            self.to_rgb(block, where, f"to_rgbs.{index - 1}", upsample=True)

    def styled_conv(self, layer: PersistentRecord, where: str, prefix: str, noise_index: int, up: int) -> None:
        if self.attr(layer, "activation", where) != _LRELU:
            raise self.fail(where, f"activation {layer.state['activation']!r}; rosinality uses {_LRELU!r}")
        if int(self.attr(layer, "up", where)) != up:
            raise self.fail(where, f"up={layer.state['up']}, expected {up}")
        weight = self.tensor(layer, "weight", where)
        if weight.ndim != 4 or weight.shape[-2:] != (3, 3):
            raise self.fail(where, f"weight of shape {tuple(weight.shape)}; rosinality's convs are 3x3")
        self.out[f"{prefix}.conv.weight"] = weight[None]  # the scale cancels under demodulation
        self.modulation(layer, where, f"{prefix}.conv.modulation")
        res = int(self.attr(layer, "resolution", where))
        if self.attr(layer, "use_noise", where):
            strength = self.tensor(layer, "noise_strength", where).reshape(1)
            noise = self.tensor(layer, "noise_const", where).reshape(1, 1, res, res)
        else:
            strength, noise = torch.zeros(1), torch.zeros(1, 1, res, res)
        self.out[f"{prefix}.noise.weight"] = strength
        self.out[f"noises.noise_{noise_index}"] = noise
        self.out[f"{prefix}.activate.bias"] = self.tensor(layer, "bias", where)
        if up > 1:
            self.out[f"{prefix}.conv.blur.kernel"] = self.resample_filter(layer, where)

    def to_rgb(self, block: PersistentRecord, block_where: str, prefix: str, upsample: bool) -> None:
        where = f"{block_where}.torgb"
        layer = self.child(block, "torgb", block_where)
        weight = self.tensor(layer, "weight", where)
        if weight.ndim != 4 or weight.shape[0] != 3:
            raise self.fail(where, f"weight of shape {tuple(weight.shape)}; expected [3, channels, k, k]")
        fan_in = weight[0].numel()
        # NVIDIA scales the styles by weight_gain, rosinality the weight by 1/sqrt(fan_in): same product
        gain = float(self.attr(layer, "weight_gain", where)) * math.sqrt(fan_in)
        self.out[f"{prefix}.conv.weight"] = weight[None] * gain
        self.modulation(layer, where, f"{prefix}.conv.modulation")
        self.out[f"{prefix}.bias"] = self.tensor(layer, "bias", where).reshape(1, 3, 1, 1)
        if upsample:
            self.out[f"{prefix}.upsample.kernel"] = self.resample_filter(block, block_where)

    def modulation(self, layer: PersistentRecord, where: str, prefix: str) -> None:
        affine = self.child(layer, "affine", where)
        self.out[f"{prefix}.weight"], self.out[f"{prefix}.bias"] = self.linear(affine, f"{where}.affine", 1.0)

    def resample_filter(self, layer: PersistentRecord, where: str) -> Tensor:
        kernel = self.tensor(layer, "resample_filter", where)
        if tuple(kernel.shape) != (4, 4):
            raise self.fail(where, f"resample filter of shape {tuple(kernel.shape)}; rosinality's layout needs a "
                            "4-tap filter such as the default [1, 3, 3, 1]")
        return kernel * _FILTER_GAIN
