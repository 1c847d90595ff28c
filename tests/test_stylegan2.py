"""The generator: rosinality's state-dict layout, forward() contract, and fast == straightforward kernels."""

import pytest
import torch

from nada_sweep.models.stylegan2 import Generator, channel_table, upfir2d_fast, upfir2d_reference

SMALL_CHANNELS = {4: 16, 8: 16, 16: 8, 32: 8}


def small_generator(seed: int = 0, style_dim: int = 32) -> Generator:
    """A 32 px generator whose biases and noise strengths are non-zero, so every term of forward() matters."""
    torch.manual_seed(seed)
    g = Generator(32, style_dim, n_mlp=2, channels=SMALL_CHANNELS)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("noise.weight") or name.endswith("bias"):
                p.add_(0.2 * torch.randn_like(p))
    return g


def expected_key_count(size: int, n_mlp: int = 8) -> int:
    log_size = size.bit_length() - 1
    blocks = log_size - 2
    per_block = 6 + 5 + 5  # up conv (+ blur.kernel), conv, to_rgb (+ upsample.kernel)
    num_layers = 2 * log_size - 3
    return 2 * n_mlp + 1 + 5 + 4 + per_block * blocks + num_layers


# ---- layout: NADA.md's description of rosinality's Generator --------------------------------------------


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_state_dict_layout_matches_rosinality(size):
    with torch.device("meta"):
        g = Generator(size)  # style_dim 512, n_mlp 8, channel_multiplier 2
    sd = g.state_dict()
    log_size = size.bit_length() - 1
    assert len(sd) == expected_key_count(size)
    assert g.n_latent == 2 * log_size - 2
    assert g.num_layers == 2 * log_size - 3
    assert sd["input.input"].shape == (1, 512, 4, 4)
    assert sd["conv1.conv.weight"].shape == (1, 512, 512, 3, 3)
    assert sd["conv1.conv.modulation.weight"].shape == (512, 512)
    assert sd["conv1.conv.modulation.bias"].shape == (512,)
    assert sd["conv1.noise.weight"].shape == (1,)
    assert sd["conv1.activate.bias"].shape == (512,)
    assert sd["to_rgb1.conv.weight"].shape == (1, 3, 512, 1, 1)
    assert sd["to_rgb1.bias"].shape == (1, 3, 1, 1)
    assert "to_rgb1.upsample.kernel" not in sd
    for i in range(1, 9):
        assert sd[f"style.{i}.weight"].shape == (512, 512)
        assert sd[f"style.{i}.bias"].shape == (512,)
    assert "style.9.weight" not in sd
    for i in range(g.num_layers):
        res = 2 ** ((i + 5) // 2)
        assert sd[f"noises.noise_{i}"].shape == (1, 1, res, res)
    n_blocks = log_size - 2
    assert len(g.convs) == 2 * n_blocks and len(g.to_rgbs) == n_blocks and len(g.upsamples) == 0
    for j in range(n_blocks):
        assert sd[f"convs.{2 * j}.conv.blur.kernel"].shape == (4, 4)
        assert f"convs.{2 * j + 1}.conv.blur.kernel" not in sd
        assert sd[f"to_rgbs.{j}.upsample.kernel"].shape == (4, 4)
        assert sd[f"to_rgbs.{j}.bias"].shape == (1, 3, 1, 1)


def test_channel_table_at_1024_with_multiplier_2():
    with torch.device("meta"):
        sd = Generator(1024, channel_multiplier=2).state_dict()
    # rosinality: 4..32 -> 512, 64 -> 256*cm, 128 -> 128*cm, 256 -> 64*cm, 512 -> 32*cm, 1024 -> 16*cm
    assert sd["convs.0.conv.weight"].shape == (1, 512, 512, 3, 3)  # 8 px
    assert sd["convs.6.conv.weight"].shape == (1, 512, 512, 3, 3)  # 64 px: 256 * 2
    assert sd["convs.8.conv.weight"].shape == (1, 256, 512, 3, 3)  # 128 px, up-sampling from 512
    assert sd["convs.9.conv.weight"].shape == (1, 256, 256, 3, 3)
    assert sd["convs.10.conv.weight"].shape == (1, 128, 256, 3, 3)  # 256 px
    assert sd["convs.12.conv.weight"].shape == (1, 64, 128, 3, 3)  # 512 px
    assert sd["convs.14.conv.weight"].shape == (1, 32, 64, 3, 3)  # 1024 px
    assert sd["convs.15.conv.weight"].shape == (1, 32, 32, 3, 3)
    assert "convs.16.conv.weight" not in sd
    assert sd["convs.15.conv.modulation.weight"].shape == (32, 512)
    assert sd["to_rgbs.7.conv.weight"].shape == (1, 3, 32, 1, 1)
    assert sd["noises.noise_16"].shape == (1, 1, 1024, 1024)


def test_channel_multiplier_1_and_explicit_channels():
    assert channel_table(256, channel_multiplier=1) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}
    g = Generator(32, 16, n_mlp=1, channels=SMALL_CHANNELS)
    assert g.channels == SMALL_CHANNELS
    assert g.state_dict()["convs.2.conv.weight"].shape == (1, 8, 16, 3, 3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"size": 48}, "power of two"),
        ({"size": 2048}, "no default channel count"),
        ({"size": 32, "channels": {4: 8, 8: 8, 16: 8}}, "no entry for resolution"),
        ({"size": 32, "channels": {4: 8, 8: 8, 16: 8, 32: 0}}, "positive integers"),
        ({"size": 32, "style_dim": 0, "channels": SMALL_CHANNELS}, "style_dim"),
    ],
)
def test_invalid_architecture_raises(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Generator(**kwargs)


def test_fir_kernels_keep_the_dc_gain_of_the_zero_inserted_signal():
    g = Generator(32, 16, n_mlp=1, channels=SMALL_CHANNELS)
    sd = g.state_dict()
    # zero insertion keeps 1 sample in 4, so the 2x filters sum to 4
    assert sd["convs.0.conv.blur.kernel"].sum().item() == pytest.approx(4.0)
    assert sd["to_rgbs.0.upsample.kernel"].sum().item() == pytest.approx(4.0)
    up = g.to_rgbs[0].upsample(torch.ones(1, 3, 8, 8))
    assert up.shape == (1, 3, 16, 16)
    assert torch.allclose(up[..., 2:-2, 2:-2], torch.ones(()))


# ---- FIR filtering: the fast depthwise form equals the definition -----------------------------------------


@pytest.mark.parametrize(
    "up, pad",
    [(1, (1, 1)), (1, (2, 1)), (1, (0, 2)), (2, (2, 1)), (2, (1, 1)), (2, (3, 3)), (2, (0, 0))],
)
@pytest.mark.parametrize("taps", ["blur", "random"])
def test_upfir2d_fast_matches_reference(up, pad, taps):
    torch.manual_seed(1)
    kernel = torch.tensor([1.0, 3.0, 3.0, 1.0]) if taps == "blur" else None
    kernel = torch.outer(kernel, kernel) / 64 if kernel is not None else torch.randn(4, 4)  # random: not rank-1
    x = torch.randn(2, 5, 7, 9, dtype=torch.float64, requires_grad=True)
    kernel = kernel.double()
    ref = upfir2d_reference(x, kernel, up, pad)
    fast = upfir2d_fast(x, kernel, up, pad)
    assert fast.shape == ref.shape == (2, 5, 7 * up + sum(pad) - 3, 9 * up + sum(pad) - 3)
    assert torch.allclose(fast, ref, atol=1e-12)
    grad_out = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, x, grad_out)
    (g_fast,) = torch.autograd.grad(fast, x, grad_out)
    assert torch.allclose(g_fast, g_ref, atol=1e-12)


# ---- forward(): the rosinality contract --------------------------------------------------------------------


def test_forward_shapes_and_latents():
    g = small_generator()
    z = torch.randn(3, 32)
    img, latent = g([z], return_latents=True)
    assert img.shape == (3, 3, 32, 32)
    assert latent.shape == (3, g.n_latent, 32)
    assert torch.allclose(latent, g.get_latent(z).unsqueeze(1).expand(-1, g.n_latent, -1))
    _, none = g([z])
    assert none is None


def test_fixed_noise_is_deterministic_and_random_noise_is_not():
    g = small_generator()
    z = torch.randn(2, 32)
    a, _ = g([z], randomize_noise=False)
    b, _ = g([z], randomize_noise=False)
    assert torch.equal(a, b)
    noise = g.make_noise()
    c, _ = g([z], noise=noise)
    d, _ = g([z], noise=noise)
    assert torch.equal(c, d)
    e, _ = g([z])
    f, _ = g([z])
    assert not torch.allclose(e, f)
    # the stored buffers are exactly what randomize_noise=False uses
    stored = [getattr(g.noises, f"noise_{i}") for i in range(g.num_layers)]
    assert torch.equal(g([z], noise=stored)[0], a)


def test_seeded_generators_render_identically():
    z = torch.randn(2, 32)
    a, _ = small_generator(seed=3)([z], randomize_noise=False)
    b, _ = small_generator(seed=3)([z], randomize_noise=False)
    c, _ = small_generator(seed=4)([z], randomize_noise=False)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_style_mixing_uses_inject_index():
    g = small_generator()
    z1, z2 = torch.randn(2, 32), torch.randn(2, 32)
    _, latent = g([z1, z2], inject_index=3, return_latents=True, randomize_noise=False)
    w1, w2 = g.get_latent(z1), g.get_latent(z2)
    assert torch.allclose(latent[:, :3], w1[:, None].expand(-1, 3, -1))
    assert torch.allclose(latent[:, 3:], w2[:, None].expand(-1, g.n_latent - 3, -1))
    # a W+ tensor with the same rows renders the same image
    mixed, _ = g([z1, z2], inject_index=3, randomize_noise=False)
    direct, _ = g([latent], input_is_latent=True, randomize_noise=False)
    assert torch.allclose(mixed, direct, atol=1e-6)


def test_truncation_pulls_towards_truncation_latent():
    g = small_generator()
    z = torch.randn(2, 32)
    centre = g.mean_latent(64)
    assert centre.shape == (1, 32)
    truncated, latent = g([z], truncation=0.0, truncation_latent=centre, randomize_noise=False, return_latents=True)
    assert torch.allclose(latent, centre[:, None].expand(2, g.n_latent, -1))
    assert torch.allclose(truncated[0], truncated[1], atol=1e-6)  # both samples collapse onto the centre
    half, _ = g([z], truncation=0.5, truncation_latent=centre, randomize_noise=False)
    w = centre + 0.5 * (g.get_latent(z) - centre)
    assert torch.allclose(half, g([w], input_is_latent=True, randomize_noise=False)[0], atol=1e-6)


def test_make_noise_matches_buffers():
    g = small_generator()
    noise = g.make_noise()
    assert [n.shape for n in noise] == [getattr(g.noises, f"noise_{i}").shape for i in range(g.num_layers)]


# ---- fast vs straightforward kernels ------------------------------------------------------------------------


def _render_and_grads(g: Generator, fast: bool, z: torch.Tensor, noise: list[torch.Tensor]):
    g.set_fast_kernels(fast)
    g.zero_grad()
    z = z.clone().requires_grad_(True)
    img, _ = g([z], noise=noise)
    weights = torch.linspace(-1, 1, img.numel(), dtype=img.dtype).view_as(img)
    (img * weights).mean().backward()
    grads = {name: p.grad.clone() for name, p in g.named_parameters()}
    grads["z"] = z.grad.clone()
    return img.detach(), grads


@pytest.mark.parametrize("dtype, atol, rtol_grad", [(torch.float32, 1e-5, 1e-5), (torch.float64, 1e-12, 1e-10)])
def test_fast_kernels_match_straightforward(dtype, atol, rtol_grad):
    g = small_generator().to(dtype)
    z = torch.randn(3, 32, dtype=dtype)
    noise = [n.repeat(3, 1, 1, 1) for n in g.make_noise()]
    img_fast, grads_fast = _render_and_grads(g, True, z, noise)
    img_ref, grads_ref = _render_and_grads(g, False, z, noise)
    assert (img_fast - img_ref).abs().max().item() < atol
    for name, ref in grads_ref.items():
        scale = ref.abs().max().item()
        assert (grads_fast[name] - ref).abs().max().item() <= rtol_grad * scale + 1e-30, name
    # the kernels really differ in form: the straightforward path runs a grouped conv per sample
    assert all(m.fast is False for m in g.modules() if hasattr(m, "fast"))


def test_fast_kernels_are_the_default():
    g = Generator(32, 16, n_mlp=1, channels=SMALL_CHANNELS)
    flags = [m.fast for m in g.modules() if hasattr(m, "fast")]
    assert flags and all(flags)
    g.set_fast_kernels(False)
    assert not any(m.fast for m in g.modules() if hasattr(m, "fast"))
