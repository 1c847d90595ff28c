"""Which generator layers train, and the adaptive choice of them ("auto k").

In rosinality's generator, w index 0 drives conv1, index 1 drives to_rgb1, and for block j the two convs
are driven by 1+2j and 2+2j and its ToRGB by 3+2j. The reference implementation maps index i to
[conv1, to_rgb1, convs[0], convs[1], ...][i] instead, one place off; `layer_map="reference"` keeps that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from nada_sweep.models.stylegan2 import Generator


def default_trainable(generator: Generator) -> list[nn.Module]:
    """The layers trained when no selection runs: constant input, conv1 and every styled conv."""
    return [generator.input, generator.conv1, *generator.convs]


def layers_driven_by(generator: Generator, index: int) -> list[nn.Module]:
    """The trainable (non-ToRGB) layers whose style comes from w index `index`."""
    if index == 0:
        return [generator.conv1]
    if 1 <= index <= len(generator.convs):
        return [generator.convs[index - 1]]
    return []  # the last index only drives the final ToRGB, which stays frozen


def reference_layers_for(generator: Generator, index: int) -> list[nn.Module]:
    """The reference's (off-by-one) choice for w index `index`, reproduced exactly."""
    candidates = [generator.conv1, generator.to_rgb1, *generator.convs]
    return [candidates[index]]


LAYER_MAPS: dict[str, Callable[[Generator, int], list[nn.Module]]] = {
    "driven": layers_driven_by,
    "reference": reference_layers_for,
}


def set_trainable(generator: Generator, layers: Sequence[nn.Module]) -> None:
    """Freeze every parameter of `generator`, then unfreeze those of `layers`."""
    generator.requires_grad_(False)
    for layer in layers:
        layer.requires_grad_(True)


SEARCH_LR = 0.01  # the reference's SGD rate for the W+ codes of its layer search


def pick_w_indices(
    generator: Generator,
    w0: torch.Tensor,
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    k: int,
    iters: int,
    *,
    weight_gradients: bool = False,
    lr: float = SEARCH_LR,
    randomize_noise: bool = True,
    candidates: Sequence[int] | None = None,
) -> list[int]:
    """Optimise W+ copies of `w0` against `loss_fn` and return the k w indices that moved most.

    Only `candidates` (default: every index) can be chosen, at most all of them.

    `weight_gradients=True` reproduces the reference, which leaves every generator weight requiring
    gradients during this search; the chosen indices are the same, the work is not.
    """
    def loss_of(w_plus: torch.Tensor, iteration: int) -> torch.Tensor:
        return loss_fn(generator([w_plus], input_is_latent=True, randomize_noise=randomize_noise)[0])

    w_start = w0.detach().unsqueeze(1).repeat(1, generator.n_latent, 1)
    movement = w_plus_movement(list(generator.parameters()), w_start, loss_of, iters,
                               weight_gradients=weight_gradients, lr=lr)
    return most_moved(movement.mean(dim=0), k, candidates)


def w_plus_movement(
    parameters: Sequence[nn.Parameter],
    w_start: torch.Tensor,
    loss_of: Callable[[torch.Tensor, int], torch.Tensor],
    iters: int,
    *,
    weight_gradients: bool = False,
    lr: float = SEARCH_LR,
) -> torch.Tensor:
    """SGD on a copy of the W+ codes `w_start` [n, n_latent, style_dim] against `loss_of(w_plus, iteration)`;
    how far each sample's code of each index moved, [n, n_latent] (mean over style_dim).

    The generator's `parameters` require gradients during the search only with `weight_gradients`, and keep
    neither their gradients nor a changed flag afterwards (a pack passes every member's).
    """
    previous = [p.requires_grad for p in parameters]
    for parameter in parameters:
        parameter.requires_grad_(weight_gradients)
    w_plus = w_start.clone().requires_grad_(True)
    optimiser = torch.optim.SGD([w_plus], lr=lr)
    try:
        for iteration in range(iters):
            loss = loss_of(w_plus, iteration)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    finally:
        for parameter, flag in zip(parameters, previous, strict=True):
            parameter.requires_grad_(flag)
            parameter.grad = None
    return (w_plus.detach() - w_start).abs().mean(dim=-1)


def most_moved(movement: torch.Tensor, k: int, candidates: Sequence[int] | None = None) -> list[int]:
    """The (at most k) `candidates` with the largest `movement` [n_latent], largest first.

    The n_latent values are read back once and ranked in Python: the caller needs the indices on the host
    anyway, and a candidate tensor made there would have to travel to the GPU first (another wait).
    """
    values = movement.tolist()
    allowed = list(candidates) if candidates is not None else list(range(len(values)))
    return sorted(allowed, key=lambda index: -values[index])[:k]


def trainable_indices(generator: Generator, layer_map: str) -> list[int]:
    """The w indices that map to at least one trainable layer (with the true map, all but the last)."""
    return [index for index in range(generator.n_latent) if LAYER_MAPS[layer_map](generator, index)]


def layers_for_indices(generator: Generator, indices: Sequence[int], layer_map: str) -> list[nn.Module]:
    """The distinct layers the chosen w indices map to, in generator order."""
    mapper = LAYER_MAPS[layer_map]
    chosen: dict[int, nn.Module] = {}
    for index in indices:
        for layer in mapper(generator, index):
            chosen[id(layer)] = layer
    return list(chosen.values())
