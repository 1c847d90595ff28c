"""Generator files: architecture inference, loading (and its errors), saving, the builtin tiny model."""

import argparse
import json
import os

import pytest
import torch

from nada_sweep.errors import UserError
from nada_sweep.models import checkpoints
from nada_sweep.models.checkpoints import (
    GeneratorSpec,
    build_generator,
    infer_spec,
    is_random_weight,
    load_generator,
    save_generator,
)
from nada_sweep.models.stylegan2 import Generator

SMALL = GeneratorSpec(size=32, style_dim=24, n_mlp=3, channels={4: 16, 8: 12, 16: 8, 32: 8})


class NotWeights:
    """A class instance inside a checkpoint: unpickling it would need this module's code."""


def render(g: Generator, seed: int = 0) -> torch.Tensor:
    z = torch.randn(2, g.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return g([z], randomize_noise=False)[0]


def seeded(spec: GeneratorSpec, seed: int) -> Generator:
    torch.manual_seed(seed)
    return build_generator(spec)


# ---- architecture inference --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: Generator(256),
        lambda: Generator(1024, channel_multiplier=1),
        lambda: Generator(512, style_dim=256, n_mlp=4, channel_multiplier=2),
        lambda: Generator(32, style_dim=24, n_mlp=3, channels={4: 16, 8: 12, 16: 8, 32: 8}),
        lambda: Generator(8, style_dim=16, n_mlp=0, channels={4: 4, 8: 4}),
    ],
    ids=["256-default", "1024-cm1", "512-sd256-mlp4", "32-custom-channels", "8-no-mapping"],
)
def test_infer_spec_round_trip(make):
    with torch.device("meta"):
        original = make()
    spec = infer_spec(original.state_dict())
    assert spec.size == original.size
    assert spec.style_dim == original.style_dim
    assert spec.n_mlp == len(original.style) - 1
    assert spec.channels == {r: c for r, c in original.channels.items() if r <= original.size}
    with torch.device("meta"):
        rebuilt = build_generator(spec)
    a, b = original.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


def test_spec_dict_round_trip_through_json():
    data = json.loads(json.dumps(SMALL.to_dict()))
    assert GeneratorSpec.from_dict(data) == SMALL


@pytest.mark.parametrize(
    "data",
    [
        {"size": 32, "style_dim": 24, "n_mlp": 3},
        {"size": 48, "style_dim": 24, "n_mlp": 3, "channels": {"4": 8}},
        {"size": 32, "style_dim": 24, "n_mlp": 3, "channels": {"4": 8, "8": 8, "16": 8}},
        {"size": "big", "style_dim": 24, "n_mlp": 3, "channels": {}},
    ],
)
def test_spec_from_bad_dict_raises_user_error(data):
    with pytest.raises(UserError, match="my spec"):
        GeneratorSpec.from_dict(data, source="my spec")


def test_infer_spec_rejects_foreign_state_dict():
    with pytest.raises(UserError, match="'style.1.weight'"):
        infer_spec({"fc.weight": torch.zeros(2, 2)})


# ---- loading files -------------------------------------------------------------------------------------------


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.pt"
    save_generator(path, seeded(SMALL, 1), latent_avg=torch.arange(24.0), metadata={"note": "test"})
    return path


def test_save_load_round_trip_renders_identically(small_file):
    original = seeded(SMALL, 1)
    loaded = load_generator(small_file)
    assert loaded.spec == SMALL
    assert torch.equal(render(loaded.generator), render(original))
    assert torch.equal(loaded.latent_avg, torch.arange(24.0))
    assert loaded.metadata == {"note": "test"}
    assert loaded.source == str(small_file.resolve())
    assert not is_random_weight(loaded)
    assert [p.name for p in small_file.parent.iterdir()] == ["small.pt"]  # no temporary file left behind


def test_saved_file_is_plain_rosinality_format(small_file):
    raw = torch.load(small_file, map_location="cpu", weights_only=True)
    assert set(raw) == {"g_ema", "latent_avg", "nada_sweep"}
    assert raw["nada_sweep"]["spec"] == SMALL.to_dict()
    # what another StyleGAN2 tool does: build its own Generator and load g_ema strictly
    g = Generator(32, 24, 3, channels=SMALL.channels)
    g.load_state_dict(raw["g_ema"], strict=True)
    assert torch.equal(render(g), render(seeded(SMALL, 1)))


def test_save_without_latent_avg_loads_as_none(tmp_path):
    path = tmp_path / "g.pt"
    save_generator(path, seeded(SMALL, 1))
    assert load_generator(path).latent_avg is None


@pytest.mark.parametrize("layout", ["g_ema", "g", "bare", "train_checkpoint"])
def test_loads_every_rosinality_layout(tmp_path, layout):
    g_ema, g = seeded(SMALL, 1), seeded(SMALL, 2)
    payload = {
        "g_ema": {"g_ema": g_ema.state_dict()},
        "g": {"g": g_ema.state_dict()},
        "bare": g_ema.state_dict(),
        # rosinality's train.py: both generators (g_ema wins), optimiser state and an argparse.Namespace
        "train_checkpoint": {
            "g": g.state_dict(),
            "g_ema": g_ema.state_dict(),
            "d": {"convs.0.0.weight": torch.zeros(1)},
            "g_optim": {"state": {}, "param_groups": []},
            "args": argparse.Namespace(size=32, lr=0.002),
        },
    }[layout]
    path = tmp_path / f"{layout}.pt"
    torch.save(payload, path)
    loaded = load_generator(path)
    assert torch.equal(render(loaded.generator), render(g_ema))
    assert loaded.latent_avg is None and loaded.metadata == {}


def test_each_load_returns_a_fresh_generator(small_file):
    first = load_generator(small_file).generator
    with torch.no_grad():
        first.input.input.add_(1.0)
    second = load_generator(small_file).generator
    assert torch.equal(render(second), render(seeded(SMALL, 1)))


def test_file_is_read_once_per_version(small_file, monkeypatch):
    checkpoints._checkpoints.clear()
    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    load_generator(small_file)
    load_generator(str(small_file))
    assert len(calls) == 1
    # a rewritten file (new mtime) is read again and its new weights are used
    save_generator(small_file, seeded(SMALL, 5))
    stat = small_file.stat()
    os.utime(small_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    reloaded = load_generator(small_file)
    assert len(calls) == 2
    assert torch.equal(render(reloaded.generator), render(seeded(SMALL, 5)))


def _truncated(tmp_path, small_file):
    data = small_file.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


def _random_bytes(tmp_path, _):
    path = tmp_path / "random.pt"
    path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).tolist()))
    return path


def _needs_code(tmp_path, small_file):
    path = tmp_path / "pickled_object.pt"
    torch.save({"g_ema": NotWeights()}, path)
    return path


def _no_generator_keys(tmp_path, _):
    path = tmp_path / "classifier.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "epoch": 3}, path)
    return path


def _wrong_shapes(tmp_path, small_file):
    raw = torch.load(small_file, weights_only=True)
    raw["g_ema"]["conv1.activate.bias"] = torch.zeros(7)
    path = tmp_path / "wrong_shape.pt"
    torch.save(raw, path)
    return path


def _empty(tmp_path, _):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda tmp_path, _: tmp_path / "missing.pt", "not found"),
        (lambda tmp_path, _: tmp_path, "is a directory"),
        (_empty, "empty"),
        (_truncated, "truncated or corrupt"),
        (_random_bytes, "not a PyTorch checkpoint, or corrupt"),
        (_needs_code, "refused: unpickling it needs arbitrary code execution"),
        (_no_generator_keys, "'style.1.weight'"),
        (_wrong_shapes, "conv1.activate.bias"),
    ],
    ids=["missing", "directory", "empty", "truncated", "random-bytes", "needs-code", "no-generator-keys", "shapes"],
)
def test_bad_files_raise_user_error_naming_the_path(tmp_path, small_file, make, message):
    path = make(tmp_path, small_file)
    with pytest.raises(UserError) as info:
        load_generator(path)
    text = str(info.value)
    assert str(path) in text
    assert message in text
    assert "\n" not in text  # one readable line, no traceback-sized dump


def test_needs_code_error_names_the_class(tmp_path, small_file):
    with pytest.raises(UserError, match=r"NotWeights.*weights_only=True"):
        load_generator(_needs_code(tmp_path, small_file))


# ---- builtin:tiny ---------------------------------------------------------------------------------------------


def test_builtin_tiny_is_seeded_random_and_small():
    before = torch.get_rng_state()
    a = load_generator("builtin:tiny")
    assert torch.equal(torch.get_rng_state(), before)  # loading does not consume the caller's RNG
    b = load_generator("builtin:tiny")
    assert is_random_weight(a)
    assert a.metadata == {"random_weights": True, "builtin": "tiny"}
    assert a.source == "builtin:tiny" and a.latent_avg is None
    assert a.spec.size == 64 and a.spec.style_dim == 64 and a.spec.n_mlp == 2
    assert max(a.spec.channels.values()) <= 32
    assert a.generator is not b.generator
    sa, sb = a.generator.state_dict(), b.generator.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert render(a.generator).shape == (2, 3, 64, 64)


def test_random_weight_label_survives_save_and_load(tmp_path):
    tiny = load_generator("builtin:tiny")
    path = tmp_path / "adapted.pt"
    save_generator(path, tiny.generator, metadata=tiny.metadata)
    assert is_random_weight(load_generator(path))


def test_unknown_builtin_lists_choices():
    with pytest.raises(UserError, match="builtin:tiny"):
        load_generator("builtin:ffhq")
