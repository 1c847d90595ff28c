"""Parametrizations: which numbers an adaptation trains, and how they enter the generator.

One name -> one class (`PARAMETRIZATIONS`). Each one renders like the rosinality-layout Generator it wraps
(same forward() arguments, the same read-only attributes: n_latent, conv1, convs, ...), trains its own
numbers, and folds them into a plain Generator whose state dict has the standard layout and key names, so
every StyleGAN2 tool loads the result.

- full: NADA's fine-tuning. A copy of the generator; the constant input, conv1 and every styled conv train.
- stylespace: StyleDomain's StyleSpace direction: one offset per input channel of every styled conv,
  added to its style, s = A(w) + Δs (6048 numbers at 1024 px, config-f).
- stylespace_sparse: the same offsets, pruned by magnitude while training until the largest 20% remain
  (1210 at 1024 px). StyleDomain's sparse direction is not a fixed set of layers: its code keeps the
  largest-magnitude coordinates of a trained direction (`pruned_offsets`: 70-95% pruned in the paper's
  figures; its Table 1 counts 1.2K = 20% of the 6048) and its trainer prunes during training (an
  `AdaptiveModel` with a minimum channel count, a cut-out rate and a pruning step, absent from the
  published code). We prune during training: `CUTOUT` of the surviving offsets every few steps over the
  first half of the run, down to `KEEP`; the second half fine-tunes the survivors.
- domain_mod: HyperDomainNet's domain modulation: one factor per input channel, s = A(w) ⊙ (1 + d), i.e.
  the conv weight's input channels scaled by (1 + d) *before* demodulation. HyperDomainNet scales the
  already demodulated weight, which a plain generator cannot express; ours folds exactly (a uniform d
  within one layer then cancels in the demodulation, as any style scale does).
- affine: only the modulation layers A of the styled convs train (trained as deltas ΔW, Δb on A's weight
  and bias: with Adam that is the same as training A itself). StyleDomain's Affine row (4.6M numbers at
  1024 px) also trains the ToRGB modulations; like NADA, we keep every ToRGB layer frozen (3.1M).

"Styled convs" are conv1 and convs.N (the layers NADA trains and layer selection chooses among); ToRGB
layers never change. The mapping network never changes in any mode.

Light modes (all but full) share the frozen generator itself: their zero-initialised deltas are applied by
forward hooks on each styled conv's `modulation` layer that exist only for the duration of one forward
call, so the same generator object renders the source side unchanged, between or inside training steps.
No generator weight requires gradients in a light mode, so backward computes none for the conv weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nada_sweep.adapt.layers import default_trainable, set_trainable
from nada_sweep.adapt.settings import REFERENCE_LR_SCALE
from nada_sweep.errors import UserError
from nada_sweep.models.stylegan2 import EqualLinear, Generator, ModulatedConv2d

# Generator attributes a parametrization answers for its generator, so layer selection and sampling take
# either (a parametrization is not a Generator subclass: its parameters() are its own numbers only).
_GENERATOR_ATTRIBUTES = frozenset({
    "size", "style_dim", "n_latent", "num_layers", "channels", "style", "input", "conv1", "to_rgb1",
    "convs", "to_rgbs", "noises", "make_noise", "mean_latent", "get_latent",
})


def styled_layers(generator: Generator) -> list[tuple[str, nn.Module]]:
    """conv1 and every convs.N, in generator order, named as in the state dict; UserError if one is missing."""
    layers = [("conv1", getattr(generator, "conv1", None))]
    layers += [(f"convs.{i}", layer) for i, layer in enumerate(getattr(generator, "convs", []))]
    for name, layer in layers:
        conv = getattr(layer, "conv", None)
        if not isinstance(conv, ModulatedConv2d) or not isinstance(conv.modulation, EqualLinear):
            raise UserError(f"params: the generator has no modulated convolution {name!r} with a modulation "
                            "layer (expected rosinality's layout: conv1.conv.modulation, convs.N.conv.modulation)")
    return layers


class Parametrization(nn.Module):
    """Base: renders through `generator` and exposes its layers; subclasses define what trains."""

    name: ClassVar[str]
    # Evaluations before this step see numbers that are not yet final (a sparse mode still pruning): not a
    # best step to keep.
    settled_step: int = 0

    def __init__(self, generator: Generator) -> None:
        super().__init__()
        named = styled_layers(generator)
        # Kept outside nn.Module's registry: a light mode's parameters() and state_dict() are its own numbers.
        object.__setattr__(self, "_generator", generator)
        object.__setattr__(self, "_layers", [layer for _, layer in named])
        self.layer_names = [name for name, _ in named]

    def __getattr__(self, name: str) -> Any:
        if name in _GENERATOR_ATTRIBUTES:
            return getattr(self.__dict__["_generator"], name)
        return super().__getattr__(name)

    @property
    def generator(self) -> Generator:
        """The generator this mode renders through: the shared frozen one (light modes) or the trained copy."""
        return self._generator

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        return self._generator(*args, **kwargs)

    def trainable(self) -> list[nn.Parameter]:
        """Every tensor this mode may train: the optimiser's list (those without a gradient are skipped)."""
        return list(self.parameters())

    def num_trainable(self) -> int:
        """How many numbers this mode trains with every layer selected."""
        return sum(p.numel() for p in self.trainable())

    def select(self, layers: Sequence[nn.Module] | None) -> None:
        """Let only the numbers of `layers` (styled convs of `generator`) receive gradients; None: every layer.

        Layers that hold no numbers in this mode (a ToRGB chosen by `layer_map: reference`) are skipped.
        """
        chosen = None if layers is None else {id(layer) for layer in layers}
        for index, layer in enumerate(self._layers):
            for parameter in self._layer_parameters(index):
                parameter.requires_grad_(chosen is None or id(layer) in chosen)

    def make_optimiser(self, lr: float) -> torch.optim.Optimizer:
        """Adam as the reference trains generator weights: lr and beta2 scaled by g_reg_every/(g_reg_every+1)."""
        scale = REFERENCE_LR_SCALE
        return torch.optim.Adam(self.trainable(), lr=lr * scale, betas=(0.0, 0.99**scale))

    def after_step(self, step: int) -> None:
        """Called after optimiser step number `step` (1-based); modes with a schedule act on it."""

    def fold(self) -> Generator:
        """A plain Generator (own copy, no gradients) that renders exactly what this parametrization renders."""
        folded = copy.deepcopy(self._generator).requires_grad_(False).eval()
        with torch.no_grad():
            for index, (_, layer) in enumerate(styled_layers(folded)):
                self._fold_into(index, layer.conv.modulation)
        return folded

    def domain_tensors(self) -> dict[str, Tensor]:
        """The domain as named tensors (all zeros = the source generator): what domain.pt stores."""
        raise UserError(f"params: {self.name!r} trains the generator's own weights; it has no domain file "
                        "(its result is generator.pt)")

    def load_domain_tensors(self, tensors: Mapping[str, Tensor], source: str) -> None:
        """Set this mode's numbers from `domain_tensors()` output (of a file named `source`)."""
        expected = self.domain_tensors()
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or extra:
            raise UserError(f"{source}: its {self.name} offsets do not fit this generator: missing "
                            f"{missing[:4]}, unexpected {extra[:4]}")
        for key, value in tensors.items():
            if tuple(value.shape) != tuple(expected[key].shape):
                raise UserError(f"{source}: offsets {key!r} have shape {tuple(value.shape)}, the generator's "
                                f"layer needs {tuple(expected[key].shape)}")
        with torch.no_grad():
            self._set_domain_tensors({k: v.detach().to(self._device()) for k, v in tensors.items()})

    # --- per mode ----------------------------------------------------------------------------------------

    def _layer_parameters(self, index: int) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    def _fold_into(self, index: int, modulation: EqualLinear) -> None:
        raise NotImplementedError

    def _set_domain_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        raise NotImplementedError

    def _device(self) -> torch.device:
        return self._generator.input.input.device


class Full(Parametrization):
    """NADA's fine-tuning of a copy of the generator (today's behaviour)."""

    name = "full"

    def __init__(self, generator: Generator) -> None:
        trained = copy.deepcopy(generator).train()
        super().__init__(trained)
        self.trained = trained  # registered: its weights are this mode's numbers (and its state)
        set_trainable(trained, default_trainable(trained))

    def trainable(self) -> list[nn.Parameter]:
        # The whole generator, as the reference's optimiser holds it: `layer_map: reference` may select
        # to_rgb1, and frozen tensors never get a gradient, so Adam leaves them alone.
        return list(self.trained.parameters())

    def num_trainable(self) -> int:
        return sum(p.numel() for layer in default_trainable(self.trained) for p in layer.parameters())

    def select(self, layers: Sequence[nn.Module] | None) -> None:
        set_trainable(self.trained, default_trainable(self.trained) if layers is None else layers)

    def fold(self) -> Generator:
        return copy.deepcopy(self.trained).requires_grad_(False).eval()


class _Light(Parametrization):
    """Deltas applied by per-call hooks on the shared generator's modulation layers."""

    def __init__(self, generator: Generator) -> None:
        super().__init__(generator)
        generator.requires_grad_(False)

    def forward(self, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
        return render_packed([self], None, *args, **kwargs)

    def _edit(self, index: int, w: Tensor, style: Tensor) -> Tensor:
        raise NotImplementedError

    def make_optimiser(self, lr: float) -> torch.optim.Optimizer:
        # Both reference codes train offsets with plain Adam at the configured lr (0.05, 0.1), default betas.
        return torch.optim.Adam(self.trainable(), lr=lr)

    def _zeros(self, size: int) -> nn.Parameter:
        return nn.Parameter(torch.zeros(size, device=self._device()))


class _PerChannel(_Light):
    """One vector per styled conv, one number per input channel (the style's width)."""

    def __init__(self, generator: Generator) -> None:
        super().__init__(generator)
        self.vectors = nn.ParameterList([self._zeros(layer.conv.in_channel) for layer in self._layers])

    def _layer_parameters(self, index: int) -> Iterator[nn.Parameter]:
        yield self.vectors[index]

    def _vector(self, index: int) -> Tensor:
        return self.vectors[index]

    def _edit(self, index: int, w: Tensor, style: Tensor) -> Tensor:
        return self._apply(style, self._vector(index))

    @staticmethod
    def _apply(style: Tensor, vector: Tensor) -> Tensor:
        """The edited style, `vector` [C] for every sample or [n, C] one per sample."""
        raise NotImplementedError

    def domain_tensors(self) -> dict[str, Tensor]:
        return {name: self._vector(i).detach().clone() for i, name in enumerate(self.layer_names)}

    def _set_domain_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        for index, name in enumerate(self.layer_names):
            self.vectors[index].copy_(tensors[name])


class StyleSpace(_PerChannel):
    """s = A(w) + Δs per styled conv (StyleDomain's StyleSpace direction)."""

    name = "stylespace"

    @staticmethod
    def _apply(style: Tensor, vector: Tensor) -> Tensor:
        return style + vector

    def _fold_into(self, index: int, modulation: EqualLinear) -> None:
        # EqualLinear adds bias * lr_mul after the weight's runtime scale, so Δs lands in the bias as Δs/lr_mul.
        modulation.bias.add_(self._vector(index) / modulation.lr_mul)


class SparseStyleSpace(StyleSpace):
    """StyleSpace offsets pruned by magnitude during training to the largest KEEP of them (see module doc)."""

    name = "stylespace_sparse"
    KEEP = 0.2  # fraction of offsets the finished domain keeps: StyleDomain's 1.2K of 6048
    CUTOUT = 0.2  # fraction of the surviving offsets removed at each pruning step

    def __init__(self, generator: Generator, steps: int = 300) -> None:
        super().__init__(generator)
        sizes = [vector.numel() for vector in self.vectors]
        self._bounds = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
        total = self._bounds[-1]
        self.register_buffer("mask", torch.ones(total, device=self._device()))
        self.keep_count = max(1, round(total * self.KEEP))
        counts = [total]
        while counts[-1] > self.keep_count:
            counts.append(max(self.keep_count, math.floor(counts[-1] * (1 - self.CUTOUT))))
        counts = counts[1:]
        # Spread over the first half of training; several cuts falling on one step keep the smallest count.
        last = max(1, math.ceil(steps / 2))
        self.schedule = {max(1, round(j * last / len(counts))): c for j, c in enumerate(counts, 1)} if counts else {}
        self.settled_step = max(self.schedule, default=0)  # from this step on the kept set no longer changes

    def _vector(self, index: int) -> Tensor:
        return self.vectors[index] * self.mask[self._bounds[index]:self._bounds[index + 1]]

    def num_trainable(self) -> int:
        return int(self.mask.sum().item())

    def after_step(self, step: int) -> None:
        if step in self.schedule:
            self.prune_to(self.schedule[step])

    def prune_to(self, count: int) -> None:
        """Keep the `count` largest-magnitude surviving offsets; zero and mask the rest."""
        with torch.no_grad():
            flat = torch.cat([self._vector(i).abs() for i in range(len(self.vectors))])
            keep = torch.zeros_like(self.mask)
            keep[torch.topk(flat, min(count, flat.numel())).indices] = 1
            self.mask.copy_(keep)
            for index, vector in enumerate(self.vectors):
                vector.mul_(self.mask[self._bounds[index]:self._bounds[index + 1]])

    def _set_domain_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        super()._set_domain_tensors(tensors)
        self.mask.copy_(torch.cat([(tensors[name] != 0).float() for name in self.layer_names]))
        self.schedule = {}


class DomainModulation(_PerChannel):
    """s = A(w) ⊙ (1 + d) per styled conv (HyperDomainNet's domain modulation, before demodulation)."""

    name = "domain_mod"

    @staticmethod
    def _apply(style: Tensor, vector: Tensor) -> Tensor:
        return style * (1 + vector)

    def _fold_into(self, index: int, modulation: EqualLinear) -> None:
        factor = 1 + self._vector(index)
        modulation.weight.mul_(factor[:, None])
        modulation.bias.mul_(factor)


class Affine(_Light):
    """Only the styled convs' modulation layers A train, as deltas on their weight and bias."""

    name = "affine"

    def __init__(self, generator: Generator) -> None:
        super().__init__(generator)
        self.weight_deltas = nn.ParameterList(
            [nn.Parameter(torch.zeros_like(layer.conv.modulation.weight)) for layer in self._layers])
        self.bias_deltas = nn.ParameterList(
            [nn.Parameter(torch.zeros_like(layer.conv.modulation.bias)) for layer in self._layers])

    def _layer_parameters(self, index: int) -> Iterator[nn.Parameter]:
        yield self.weight_deltas[index]
        yield self.bias_deltas[index]

    def _edit(self, index: int, w: Tensor, style: Tensor) -> Tensor:
        modulation = self._layers[index].conv.modulation
        # EqualLinear is linear in (weight, bias): A'(w) = A(w) + the same layer evaluated on the deltas.
        return style + F.linear(w, self.weight_deltas[index] * modulation.scale,
                                self.bias_deltas[index] * modulation.lr_mul)

    def make_optimiser(self, lr: float) -> torch.optim.Optimizer:
        # These are generator weights in all but storage: train them as the reference trains weights.
        return Parametrization.make_optimiser(self, lr)

    def _fold_into(self, index: int, modulation: EqualLinear) -> None:
        modulation.weight.add_(self.weight_deltas[index])
        modulation.bias.add_(self.bias_deltas[index])

    def domain_tensors(self) -> dict[str, Tensor]:
        tensors = {}
        for index, name in enumerate(self.layer_names):
            tensors[f"{name}.weight"] = self.weight_deltas[index].detach().clone()
            tensors[f"{name}.bias"] = self.bias_deltas[index].detach().clone()
        return tensors

    def _set_domain_tensors(self, tensors: Mapping[str, Tensor]) -> None:
        for index, name in enumerate(self.layer_names):
            self.weight_deltas[index].copy_(tensors[f"{name}.weight"])
            self.bias_deltas[index].copy_(tensors[f"{name}.bias"])


def render_packed(members: Sequence[_Light], sizes: Sequence[int] | None, *args: Any, **kwargs: Any
                  ) -> tuple[Tensor, Tensor | None]:
    """Render one batch through the generator the light `members` share, member i's offsets on its own
    `sizes[i]` consecutive samples (None: a single member on the whole batch); generator forward() arguments.

    Every operation of the generator is per sample, so member i's images (and gradients) are those it would
    render alone: a pack of K trials is one forward and one backward of their samples together.
    """
    per_channel = sizes is not None and len({type(member) for member in members}) == 1 and isinstance(
        members[0], _PerChannel)
    repeats = torch.tensor(list(sizes), device=members[0]._device()) if per_channel else None

    def hook(index: int, module: nn.Module, inputs: tuple[Tensor, ...], style: Tensor) -> Tensor:
        if sizes is None:
            return members[0]._edit(index, inputs[0], style)
        if per_channel:
            # One op for the whole pack (each sample gets its member's vector): the same elementwise
            # arithmetic as each member's own edit, without K splits and a concatenation per layer.
            vectors = torch.stack([member._vector(index) for member in members])
            return members[0]._apply(style, vectors.repeat_interleave(repeats, dim=0, output_size=len(style)))
        pieces = zip(members, inputs[0].split(list(sizes)), style.split(list(sizes)), strict=True)
        return torch.cat([member._edit(index, w, s) for member, w, s in pieces])

    first = members[0]
    handles = [layer.conv.modulation.register_forward_hook(partial(hook, index))
               for index, layer in enumerate(first._layers)]
    try:
        return first._generator(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


PARAMETRIZATIONS: dict[str, type[Parametrization]] = {
    cls.name: cls for cls in (Full, StyleSpace, SparseStyleSpace, DomainModulation, Affine)
}


def build_params(name: str, generator: Generator, *, steps: int = 300) -> Parametrization:
    """The parametrization `name` over `generator` (full copies it; light modes share and freeze it).

    steps: the run's training steps (stylespace_sparse spreads its pruning over the first half of them).
    """
    if name not in PARAMETRIZATIONS:
        raise UserError(f"params: unknown parametrization {name!r}; valid: {', '.join(PARAMETRIZATIONS)}")
    if name == SparseStyleSpace.name:
        return SparseStyleSpace(generator, steps=steps)
    return PARAMETRIZATIONS[name](generator)
