"""The w-index -> layer map and adaptive layer selection on a real (tiny) generator."""

from __future__ import annotations

import pytest
import torch

from nada_sweep.adapt.layers import (
    default_trainable,
    layers_driven_by,
    layers_for_indices,
    pick_w_indices,
    reference_layers_for,
    set_trainable,
    trainable_indices,
)
from nada_sweep.models.checkpoints import load_generator


@pytest.fixture
def generator():
    return load_generator("builtin:tiny").generator.eval()


def styles_seen(generator, w_plus: torch.Tensor) -> dict[str, torch.Tensor]:
    """The style vector each styled conv and ToRGB layer receives for W+ `w_plus`."""
    seen: dict[str, torch.Tensor] = {}
    named = {"conv1": generator.conv1, "to_rgb1": generator.to_rgb1}
    named |= {f"convs.{i}": m for i, m in enumerate(generator.convs)}
    named |= {f"to_rgbs.{i}": m for i, m in enumerate(generator.to_rgbs)}
    hooks = [
        module.register_forward_hook(lambda mod, inputs, out, name=name: seen.__setitem__(name, inputs[1].clone()))
        for name, module in named.items()
    ]
    with torch.no_grad():
        generator([w_plus], input_is_latent=True, randomize_noise=False)
    for hook in hooks:
        hook.remove()
    return seen


def test_changing_w_index_changes_only_the_mapped_layers(generator):
    names = {id(m): n for n, m in generator.named_modules()}
    w_plus = torch.randn(1, generator.n_latent, generator.style_dim)
    before = styles_seen(generator, w_plus)
    for index in range(generator.n_latent):
        moved = w_plus.clone()
        moved[:, index] += 1.0
        after = styles_seen(generator, moved)
        changed = {name for name in before if not torch.equal(before[name], after[name])}
        trainable_changed = {name for name in changed if not name.startswith("to_rgb")}
        assert trainable_changed == {names[id(m)] for m in layers_driven_by(generator, index)}, index
        assert changed, f"w index {index} drives nothing"


def test_reference_map_is_one_place_off(generator):
    assert reference_layers_for(generator, 0) == [generator.conv1]
    assert reference_layers_for(generator, 1) == [generator.to_rgb1]
    assert reference_layers_for(generator, 2) == [generator.convs[0]]
    assert layers_driven_by(generator, 1) == [generator.convs[0]]
    assert layers_driven_by(generator, generator.n_latent - 1) == []


def test_default_trainable_set(generator):
    set_trainable(generator, default_trainable(generator))
    trainable = {n.split(".")[0] for n, p in generator.named_parameters() if p.requires_grad}
    assert trainable == {"input", "conv1", "convs"}


def test_pick_w_indices_returns_the_most_moved(generator):
    # After one SGD step each index moves by lr * |gradient|, so the choice must be the top-k mean |grad|.
    torch.manual_seed(0)
    w0 = torch.randn(2, generator.style_dim)

    def loss_fn(image):
        return image[:, :, :8].square().mean()

    w_plus = w0.unsqueeze(1).repeat(1, generator.n_latent, 1).requires_grad_(True)
    loss_fn(generator([w_plus], input_is_latent=True, randomize_noise=False)[0]).backward()
    expected = torch.topk(w_plus.grad.abs().mean(-1).mean(0), 3).indices.tolist()

    flags = [p.requires_grad for p in generator.parameters()]
    indices = pick_w_indices(generator, w0, loss_fn, k=3, iters=1, randomize_noise=False)
    assert indices == expected
    # Selection leaves the generator's own flags as they were and no weight gradients behind.
    assert [p.requires_grad for p in generator.parameters()] == flags
    assert all(p.grad is None for p in generator.parameters())


def test_layers_for_indices_dedupes_and_maps(generator):
    layers = layers_for_indices(generator, [0, 0, 2], "driven")
    assert layers == [generator.conv1, generator.convs[1]]
    assert layers_for_indices(generator, [1], "reference") == [generator.to_rgb1]


def test_only_indices_that_drive_a_trainable_layer_are_candidates(generator):
    last = generator.n_latent - 1
    assert trainable_indices(generator, "driven") == list(range(last))
    assert trainable_indices(generator, "reference") == list(range(generator.n_latent))
    # Even when the last index moves most (a loss on the final RGB skip only), it is never picked.
    w0 = torch.randn(2, generator.style_dim)
    chosen = pick_w_indices(generator, w0, lambda image: image.square().mean(), k=generator.n_latent, iters=1,
                            candidates=trainable_indices(generator, "driven"))
    assert sorted(chosen) == list(range(last))
