"""Domain files: round trip, the base generator's identity, mixing and scaling."""

from __future__ import annotations

import hashlib

import pytest
import torch
from test_params import perturb, render, w_plus
from test_stylegan2 import small_generator

from nada_sweep.adapt.domains import (
    apply_domain,
    base_identity,
    domain_of,
    load_domain,
    mix_domains,
    resolve_base,
    save_domain,
    scale_domain,
)
from nada_sweep.adapt.params import build_params
from nada_sweep.errors import UserError
from nada_sweep.models.checkpoints import load_generator, save_generator


@pytest.fixture
def base_file(tmp_path):
    path = tmp_path / "base.pt"
    save_generator(path, small_generator(seed=0))
    return path


def trained(mode, base_path, seed=0, scale=0.3):
    """A light parametrization over the file's generator with random numbers (as if trained)."""
    params = build_params(mode, load_generator(base_path).generator)
    perturb(params, seed=seed, scale=scale)
    return params


def images(params, generator):
    w = w_plus(generator)
    noise = generator.make_noise(3, torch.Generator().manual_seed(5))
    with torch.no_grad():
        return render(params, w, noise)


@pytest.mark.parametrize("mode", ["stylespace", "stylespace_sparse", "domain_mod", "affine"])
def test_domain_file_round_trip_renders_the_same(mode, base_file, tmp_path):
    params = trained(mode, base_file, scale=0.05 if mode == "affine" else 0.3)
    identity = base_identity(base_file)
    save_domain(tmp_path / "domain.pt", domain_of(params, identity, {"target": "sketch", "step": 50}))

    domain = load_domain(tmp_path / "domain.pt")
    assert domain.mode == mode and domain.metadata == {"target": "sketch", "step": 50}
    assert domain.base.sha256 == hashlib.sha256(base_file.read_bytes()).hexdigest()
    base = load_generator(resolve_base(domain, None, "domain.pt")).generator
    again = apply_domain(domain, base)
    assert torch.equal(images(again, base), images(params, params.generator))
    assert not any(t.requires_grad for t in again.trainable())


def test_domain_files_are_small_and_hold_no_generator_weights(base_file, tmp_path):
    params = trained("stylespace", base_file)
    save_domain(tmp_path / "d.pt", domain_of(params, base_identity(base_file)))
    payload = torch.load(tmp_path / "d.pt", weights_only=True)
    assert set(payload["offsets"]) == set(params.layer_names)
    assert (tmp_path / "d.pt").stat().st_size < base_file.stat().st_size / 10


def test_a_different_base_is_refused(base_file, tmp_path):
    params = trained("stylespace", base_file)
    save_domain(tmp_path / "d.pt", domain_of(params, base_identity(base_file)))
    other = tmp_path / "other.pt"
    save_generator(other, small_generator(seed=1))
    domain = load_domain(tmp_path / "d.pt")
    with pytest.raises(UserError, match=r"^d\.pt: trained on a different base generator: .*other\.pt"):
        resolve_base(domain, other, "d.pt")
    assert resolve_base(domain, base_file, "d.pt") == str(base_file)
    base_file.unlink()
    with pytest.raises(UserError, match="is not there; give the base with --base"):
        resolve_base(domain, None, "d.pt")


def test_builtin_bases_are_identified_by_their_weights():
    first, second = base_identity("builtin:tiny"), base_identity("builtin:tiny")
    assert first == second and first.path == "builtin:tiny" and len(first.sha256) == 64


def test_bad_domain_files_are_refused(base_file, tmp_path):
    with pytest.raises(UserError, match="domain file not found"):
        load_domain(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="not a nada-sweep domain file"):
        load_domain(base_file)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="junk.pt: not a readable domain file"):
        load_domain(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="'full' trains the generator's own weights"):
        domain_of(build_params("full", small_generator()), base_identity(base_file))


def test_a_domain_of_another_architecture_is_refused(base_file, tmp_path):
    domain = domain_of(trained("stylespace", base_file), base_identity(base_file))
    with pytest.raises(UserError, match="d.pt: its stylespace offsets do not fit"):
        apply_domain(domain, load_generator("builtin:tiny").generator, "d.pt")


def test_scaling_morphs_from_the_source_to_the_domain(base_file):
    params = trained("domain_mod", base_file)
    domain = domain_of(params, base_identity(base_file))
    base = params.generator
    source = images(build_params("domain_mod", base), base)
    assert torch.equal(images(apply_domain(scale_domain(domain, 0.0), base), base), source)
    assert torch.equal(images(apply_domain(scale_domain(domain, 1.0), base), base), images(params, base))
    half = scale_domain(domain, 0.5)
    assert all(torch.allclose(half.tensors[k], 0.5 * domain.tensors[k]) for k in domain.tensors)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(UserError, match="scale: "):
            scale_domain(domain, bad)


def test_mixing_sums_weighted_offsets(base_file):
    identity = base_identity(base_file)
    a = domain_of(trained("stylespace", base_file, seed=1), identity, {"target": "a"})
    b = domain_of(trained("stylespace", base_file, seed=2), identity, {"target": "b"})
    mixed = mix_domains([a, b], [0.5, 0.25])
    assert mixed.mode == "stylespace"
    for key in a.tensors:
        assert torch.allclose(mixed.tensors[key], 0.5 * a.tensors[key] + 0.25 * b.tensors[key])
    assert [entry["target"] for entry in mixed.metadata["mix"]] == ["a", "b"]
    sparse = domain_of(trained("stylespace_sparse", base_file, seed=3), identity)
    assert mix_domains([a, sparse], [1, 1]).mode == "stylespace"  # both are StyleSpace offsets


def test_mixing_refuses_what_does_not_add_up(base_file, tmp_path):
    identity = base_identity(base_file)
    a = domain_of(trained("stylespace", base_file, seed=1), identity)
    with pytest.raises(UserError, match=r"mix: 1 weight\(s\) \[0.5\] for 2 domain\(s\)"):
        mix_domains([a, a], [0.5], names=["a.pt", "b.pt"])
    modulation = domain_of(trained("domain_mod", base_file), identity)
    with pytest.raises(UserError, match="mix: b.pt is a domain_mod domain, a.pt a stylespace one"):
        mix_domains([a, modulation], [0.5, 0.5], names=["a.pt", "b.pt"])
    other = tmp_path / "other.pt"
    save_generator(other, small_generator(seed=1))
    elsewhere = domain_of(trained("stylespace", other), base_identity(other))
    with pytest.raises(UserError, match="only domains of one base generator mix"):
        mix_domains([a, elsewhere], [0.5, 0.5])
