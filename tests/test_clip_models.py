"""CLIP loading, preprocessing and prompt checks, on the real clip package with tiny random weights."""

import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from nada_sweep.errors import UserError
from nada_sweep.models import clip_models
from nada_sweep.models.clip_models import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_TEMPLATES,
    build_tiny_clip,
    check_prompt,
    clip,
    load_clip,
    parse_clip_arg,
    save_clip,
    wrap_clip,
)


@pytest.fixture(scope="module")
def tiny():
    return wrap_clip(build_tiny_clip(seed=0), "tiny0")


def test_preprocess_constant_image_is_normalised_per_channel(tiny):
    values = torch.tensor([-1.0, 0.2, 0.9])
    images = values.view(1, 3, 1, 1).expand(2, 3, 48, 80).contiguous()
    out = tiny.preprocess(images)
    assert out.shape == (2, 3, 32, 32)
    expected = ((values + 1) / 2 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=1e-5)


@pytest.mark.parametrize("height, width, axis", [(32, 64, -1), (64, 32, -2)])
def test_preprocess_centre_crops_the_longer_side(tiny, height, width, axis):
    # The shorter side already has the input size, so only the crop acts: it keeps indices 16..47.
    ramp = torch.linspace(-1, 1, max(height, width))
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    images = ramp.view(shape).expand(1, 3, height, width)
    out = tiny.preprocess(images)
    assert out.shape == (1, 3, 32, 32)
    kept = ((ramp[16:48] + 1) / 2 - CLIP_MEAN[0]) / CLIP_STD[0]
    first_channel = out[0, 0, 0, :] if axis == -1 else out[0, 0, :, 0]
    assert torch.allclose(first_channel, kept, atol=1e-6)


def test_preprocess_resizes_shorter_side_to_input_resolution(tiny):
    out = tiny.preprocess(torch.zeros(1, 3, 96, 128))
    assert out.shape == (1, 3, 32, 32)


def test_preprocess_matches_clips_own_pil_pipeline(tiny):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (96, 128, 3)).astype(np.uint8)
    expected = clip.clip._transform(tiny.input_resolution)(Image.fromarray(pixels))
    images = torch.from_numpy(pixels).float().permute(2, 0, 1)[None] / 127.5 - 1
    # PIL rounds its resized pixels to uint8, hence the tolerance; without antialiasing the error is ~50x.
    assert (tiny.preprocess(images)[0] - expected).abs().max() < 0.03


def test_encode_images_is_differentiable(tiny):
    images = (torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1).requires_grad_()
    emb = tiny.encode_images(images)
    assert emb.shape == (2, 32)
    emb.square().sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in tiny.model.parameters())


def test_encode_texts_has_no_grad(tiny):
    emb = tiny.encode_texts(["a photo of a dog.", "a sketch of a dog."])
    assert emb.shape == (2, 32) and not emb.requires_grad
    assert not torch.allclose(emb[0], emb[1])


def test_builtin_tiny_is_seeded_labelled_frozen_and_cached():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    loaded = load_clip("builtin:tiny")
    assert torch.equal(torch.rand(3), expected_next), "building the tiny CLIP must not consume the global RNG"
    assert loaded is load_clip("builtin:tiny")
    assert loaded.random_weights and loaded.name == "builtin:tiny"
    assert loaded.input_resolution == 32 and loaded.device == torch.device("cpu")
    assert not loaded.model.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in loaded.model.parameters())
    reference = build_tiny_clip(seed=0).state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.model.state_dict().items())
    other = build_tiny_clip(seed=1).state_dict()
    assert not torch.equal(other["text_projection"], reference["text_projection"])


@pytest.mark.parametrize("jit", [False, True], ids=["state_dict", "jit_archive"])
def test_load_local_file_matches_the_saved_model(tmp_path, jit):
    original = build_tiny_clip(seed=3)
    path = tmp_path / ("tiny_jit.pt" if jit else "tiny.pt")
    save_clip(original, path, jit=jit)
    loaded = load_clip(str(path))
    assert not loaded.random_weights and loaded.name == str(path.resolve())
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in loaded.model.parameters())
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    expected = wrap_clip(original, "original").encode_images(images)
    # Exact: float32 weights must survive build_model's fp16 cast.
    assert torch.equal(loaded.encode_images(images), expected)
    assert load_clip(str(path)) is loaded


def test_unknown_name_lists_available_models():
    with pytest.raises(UserError) as info:
        load_clip("vit-b/32")
    message = str(info.value)
    assert "'vit-b/32'" in message and "did you mean 'ViT-B/32'" in message
    assert all(name in message for name in clip.available_models()) and "builtin:tiny" in message


def test_missing_local_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="file not found"):
        load_clip(str(tmp_path / "nope.pt"))


def test_missing_cached_openai_model_names_the_cache_file(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("load_clip tried the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UserError) as info:
        load_clip("ViT-B/32")
    assert str(tmp_path / ".cache" / "clip" / "ViT-B-32.pt") in str(info.value)
    assert "ViT-B-32.pt" in str(info.value) and "local .pt" in str(info.value)
    with pytest.raises(UserError, match=str(tmp_path / "models" / "ViT-B-16.pt")):
        load_clip("ViT-B/16", download_root=tmp_path / "models")


def test_corrupt_cached_openai_model_fails_the_checksum(tmp_path):
    cache_file = clip_models.clip_cache_path("RN50", tmp_path)
    cache_file.write_bytes(b"partial download")
    with pytest.raises(UserError, match="SHA256"):
        load_clip("RN50", download_root=tmp_path)


@pytest.mark.parametrize("content, match", [
    (b"not a torch file", "cannot read"),
    (None, "not a CLIP model"),
])
def test_files_that_are_not_clip_models(tmp_path, content, match):
    path = tmp_path / "weights.pt"
    if content is None:
        torch.save({"conv.weight": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match):
        load_clip(str(path))


def test_incomplete_clip_state_dict_is_a_user_error(tmp_path):
    state = build_tiny_clip().state_dict()
    del state["ln_final.weight"]
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(UserError, match="broken.pt"):
        load_clip(str(path))


@pytest.mark.parametrize("text, expected", [
    ("ViT-B/32", ("ViT-B/32", 1.0)),
    ("ViT-B/16=0.5", ("ViT-B/16", 0.5)),
    (" ViT-L/14 =2", ("ViT-L/14", 2.0)),
    ("/models/my=clip.pt=1.5", ("/models/my=clip.pt", 1.5)),
])
def test_parse_clip_arg(text, expected):
    assert parse_clip_arg(text) == expected


@pytest.mark.parametrize("text", ["ViT-B/32=abc", "=1.0", "ViT-B/32=0", "ViT-B/32=-1", "ViT-B/32=nan",
                                  "ViT-B/32=inf", "ViT-B/32="])
def test_parse_clip_arg_rejects_bad_weights(text):
    with pytest.raises(UserError, match="clip: "):
        parse_clip_arg(text)


@pytest.mark.parametrize("text", ["", "   ", None])
def test_check_prompt_rejects_empty(text):
    with pytest.raises(UserError, match="^target: "):
        check_prompt(text, "target")


def test_check_prompt_length_limit_covers_every_template():
    check_prompt("pencil sketch", "target")
    fits = None
    for n_words in range(1, 80):
        text = " ".join(["dog"] * n_words)
        try:
            check_prompt(text, "source")
        except UserError as error:
            assert str(error).startswith("source: 'dog dog")
            assert "CLIP tokens" in str(error)
            break
        fits = text
    else:
        pytest.fail("no prompt length was rejected")
    # The longest accepted prompt must tokenize inside every template (clip.tokenize raises if not)...
    clip.tokenize([template.format(fits) for template in IMAGENET_TEMPLATES])
    # ...and the first rejected one must really overflow at least one of them.
    with pytest.raises(RuntimeError):
        clip.tokenize([template.format(fits + " dog") for template in IMAGENET_TEMPLATES])
