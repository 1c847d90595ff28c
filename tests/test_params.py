"""Parametrizations: fold parity, gradients only where selected, the loss falls in every mode."""

from __future__ import annotations

import typing

import pytest
import torch
from test_stylegan2 import small_generator

from nada_sweep.adapt.layers import layers_for_indices, pick_w_indices
from nada_sweep.adapt.losses import ClipGuidance
from nada_sweep.adapt.params import (
    PARAMETRIZATIONS,
    SparseStyleSpace,
    build_params,
    styled_layers,
)
from nada_sweep.adapt.settings import AdaptConfig, ParamsName
from nada_sweep.errors import UserError
from nada_sweep.models.checkpoints import load_generator
from nada_sweep.models.clip_models import load_clip
from nada_sweep.models.stylegan2 import Generator

LIGHT = [name for name in PARAMETRIZATIONS if name != "full"]


def tiny_generator() -> Generator:
    return load_generator("builtin:tiny").generator.eval()


GENERATORS = {"small32": small_generator, "builtin_tiny": tiny_generator}


def perturb(params, seed: int = 0, scale: float = 0.3) -> None:
    """Random, non-trivial numbers in every trainable tensor of `params`."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in params.trainable():
            if tensor.requires_grad:
                tensor.add_(scale * torch.randn(tensor.shape, generator=rng))


def w_plus(generator: Generator, n: int = 3, seed: int = 1) -> torch.Tensor:
    """A W+ batch whose rows differ per index, so every layer sees its own style."""
    rng = torch.Generator().manual_seed(seed)
    z = torch.randn(n * generator.n_latent, generator.style_dim, generator=rng)
    with torch.no_grad():
        return generator.style(z).view(n, generator.n_latent, -1)


def render(model, w, noise):
    return model([w], input_is_latent=True, noise=noise)[0]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "grouped"])
@pytest.mark.parametrize("config", GENERATORS)
@pytest.mark.parametrize("mode", list(PARAMETRIZATIONS))
def test_folded_generator_renders_what_base_plus_offsets_renders(mode, config, fast):
    base = GENERATORS[config]()
    base.set_fast_kernels(fast)
    params = build_params(mode, base)
    perturb(params, scale=0.05 if mode in ("full", "affine") else 0.3)
    w = w_plus(base)
    noise = [n.repeat(3, 1, 1, 1) for n in base.make_noise(generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        source = render(base, w, noise)
        adapted = render(params, w, noise)
        folded_generator = params.fold()
        folded = render(folded_generator, w, noise)
        source_after = render(base, w, noise)
    assert (adapted - source).abs().max() > 0.05  # the numbers really change the images
    assert (folded - adapted).abs().max().item() < 1e-5
    assert torch.equal(source_after, source)  # the base renders the source, before and after
    assert type(folded_generator) is Generator
    assert list(folded_generator.state_dict()) == list(base.state_dict())  # the rosinality layout and keys
    assert not any(p.requires_grad for p in folded_generator.parameters())


def fake_loss(images: torch.Tensor) -> torch.Tensor:
    return (images * torch.linspace(-1, 1, images.shape[-1])).mean()


@pytest.mark.parametrize("mode", LIGHT)
def test_gradients_reach_only_the_selected_layers_offsets(mode):
    base = small_generator()
    params = build_params(mode, base)
    perturb(params)
    layers = [layer for _, layer in styled_layers(base)]
    chosen = [layers[0], layers[3]]
    params.select(chosen + [base.to_rgb1])  # a ToRGB (layer_map: reference) holds no numbers: skipped
    w = w_plus(base)
    fake_loss(render(params, w, None)).backward()
    for index in range(len(layers)):
        for tensor in params._layer_parameters(index):
            if index in (0, 3):
                assert tensor.grad is not None and tensor.grad.abs().sum() > 0
            else:
                assert tensor.grad is None and not tensor.requires_grad
    # No generator weight, conv or other, gets (or needs) a gradient in a light mode.
    assert all(p.grad is None and not p.requires_grad for p in base.parameters())
    params.select(None)
    assert all(t.requires_grad for t in params.trainable())


def test_full_mode_selects_layers_as_today():
    base = small_generator()
    params = build_params("full", base)
    assert params.generator is not base  # full trains a copy
    params.select([params.convs[1]])
    fake_loss(render(params, w_plus(base), None)).backward()
    trained = {name for name, p in params.generator.named_parameters() if p.grad is not None}
    assert trained and all(name.startswith("convs.1.") for name in trained)
    assert all(p.grad is None for p in base.parameters())


def test_layer_selection_runs_on_a_parametrization():
    base = small_generator()
    params = build_params("stylespace", base)
    perturb(params)
    layers = layers_for_indices(params, [0, 2], "driven")
    assert layers == [base.conv1, base.convs[1]]
    # The W+ search sees the adapted generator, trains nothing and leaves every flag as it was.
    indices = pick_w_indices(params, base.style(torch.randn(2, 32)), fake_loss, k=2, iters=1)
    assert len(indices) == 2
    assert all(t.requires_grad and t.grad is None for t in params.trainable())
    assert all(not p.requires_grad for p in base.parameters())


@pytest.fixture(scope="module")
def guidance():
    return ClipGuidance([(load_clip("builtin:tiny"), 1.0)], source="photo", target="pencil sketch")


LEARNING_RATES = {"full": 0.002, "affine": 0.01, "stylespace": 0.05, "stylespace_sparse": 0.05, "domain_mod": 0.05}


@pytest.mark.parametrize("mode", list(PARAMETRIZATIONS))
def test_loss_falls_on_a_fixed_batch(mode, guidance):
    torch.manual_seed(0)
    base = small_generator()  # non-zero noise strengths: the two sides differ from the first step
    params = build_params(mode, base, steps=8)
    optimiser = params.make_optimiser(LEARNING_RATES[mode])
    w = w_plus(base, n=2)
    # Fixed noise, different on the two sides as in training (identical images have no direction to follow).
    src_noise, noise = (base.make_noise(2, torch.Generator().manual_seed(seed)) for seed in (3, 4))
    with torch.no_grad():
        source_embeddings = guidance.embed_source(render(base, w, src_noise))
    losses = []
    for step in range(1, 9):
        loss = guidance.loss(render(params, w, noise), source_embeddings)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        params.after_step(step)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    if mode != "full":
        assert all(p.grad is None for p in base.parameters())


def test_sparse_mode_prunes_to_the_largest_fifth_by_the_middle_of_training():
    base = small_generator()
    params = SparseStyleSpace(base, steps=20)
    total = sum(v.numel() for v in params.vectors)
    assert params.keep_count == round(0.2 * total) and params.settled_step == 10
    perturb(params)
    before = torch.cat([v.detach().abs() for v in params.vectors])
    for step in range(1, 11):
        params.after_step(step)
    kept = torch.cat([params._vector(i).detach() for i in range(len(params.vectors))])
    assert params.num_trainable() == int(torch.count_nonzero(kept)) == params.keep_count
    # Without training between the cuts, the survivors are exactly the largest offsets.
    assert set(torch.nonzero(kept).flatten().tolist()) == set(torch.topk(before, params.keep_count).indices.tolist())
    assert sum(int(torch.count_nonzero(t)) for t in params.domain_tensors().values()) == params.keep_count


def test_parameter_counts_at_1024_px():
    torch.manual_seed(0)
    base = Generator(1024)  # FFHQ config-f's architecture (random weights)
    counts = {mode: build_params(mode, base).num_trainable() for mode in LIGHT}
    # StyleDomain's 6048 StyleSpace channels (conv1 and 16 convs); affine: 513 numbers (512 + bias) each.
    assert counts == {"stylespace": 6048, "stylespace_sparse": 6048, "domain_mod": 6048, "affine": 6048 * 513}
    sparse = build_params("stylespace_sparse", base)
    assert sparse.keep_count == 1210


def test_registry_matches_the_setting_and_unknown_names_are_refused():
    assert list(typing.get_args(ParamsName)) == list(PARAMETRIZATIONS)
    assert AdaptConfig(target="x").params == "full"
    with pytest.raises(UserError, match="params: unknown parametrization 'lora'; valid: full, stylespace"):
        build_params("lora", small_generator())


def test_a_generator_without_modulated_convs_is_refused():
    base = small_generator()
    base.convs[2] = torch.nn.Identity()
    with pytest.raises(UserError, match="'convs.2'"):
        build_params("stylespace", base)


def test_state_dict_holds_only_the_offsets_and_restores_them():
    base = small_generator()
    params = build_params("domain_mod", base)
    perturb(params)
    state = params.state_dict()
    assert sorted(state) == sorted(f"vectors.{i}" for i in range(len(params.layer_names)))
    again = build_params("domain_mod", base)
    again.load_state_dict(state)
    w = w_plus(base)
    noise = base.make_noise(3)
    with torch.no_grad():
        assert torch.equal(render(again, w, noise), render(params, w, noise))
