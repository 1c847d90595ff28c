"""Domain files (domain.pt): a light parametrization's numbers without the generator they apply to.

A domain file holds the offsets of one light mode (see nada_sweep.adapt.params), the mode's name and the
identity of its base generator: the path it was trained from and a SHA-256 of that file's bytes (a
builtin generator has no file: its weights are hashed instead). Applying a domain to any other base is
refused, because offsets are only meaningful on the weights they were trained against.

Domains are plain tensors that are zero for the source generator, so they can be added and scaled:
`mix_domains` (StyleDomain's domain mixing: a weighted sum of several domains' offsets) and
`scale_domain` (offset times t in [0, 1]: a morph from the source, t = 0, to the domain, t = 1).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nada_sweep import run_files
from nada_sweep.adapt.params import (
    PARAMETRIZATIONS,
    Full,
    Parametrization,
    build_params,
)
from nada_sweep.errors import UserError
from nada_sweep.models.cache import ModelCache, file_identity
from nada_sweep.models.checkpoints import BUILTIN_PREFIX, load_generator
from nada_sweep.models.stylegan2 import Generator
from nada_sweep.models.weights_file import WeightsFileError, load_weights

DOMAIN_FORMAT = "nada_sweep.domain"
DOMAIN_VERSION = 1
# Modes whose domains are StyleSpace offsets of the same meaning, so they mix with one another.
_STYLESPACE_MODES = ("stylespace", "stylespace_sparse")
_HASH_CHUNK = 1 << 22

_hashes: ModelCache[str] = ModelCache(entries=16)  # per file identity: hashing a 1024 px file takes ~1 s


@dataclass(frozen=True)
class BaseIdentity:
    """Which generator a domain applies to."""

    path: str  # the base as the run named it: an absolute file path or "builtin:<name>"
    sha256: str  # of the file's bytes (builtins: of their weights)

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "sha256": self.sha256}


@dataclass
class Domain:
    """The contents of one domain.pt."""

    mode: str  # a light parametrization's name
    tensors: dict[str, Tensor]  # its domain_tensors(), on the CPU
    base: BaseIdentity
    metadata: dict[str, Any] = field(default_factory=dict)  # source/target text, step, ... (JSON data)


def base_identity(source: str | Path) -> BaseIdentity:
    """The identity of a base generator: a file (hashed, cached per path, mtime and size) or a builtin."""
    name = str(source)
    if name.startswith(BUILTIN_PREFIX):
        return BaseIdentity(name, _weights_sha256(load_generator(name).generator))
    path = Path(name).expanduser()
    try:
        identity = file_identity(path)
    except OSError:
        raise UserError(f"{path}: base generator file not found") from None
    return BaseIdentity(identity[0], _hashes.get(identity, lambda: _file_sha256(Path(identity[0]))))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _weights_sha256(generator: Generator) -> str:
    digest = hashlib.sha256()
    for key, tensor in sorted(generator.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def domain_of(params: Parametrization, base: BaseIdentity, metadata: Mapping[str, Any] | None = None) -> Domain:
    """The domain a light parametrization holds now (UserError for full)."""
    tensors = {key: value.cpu() for key, value in params.domain_tensors().items()}
    return Domain(params.name, tensors, base, dict(metadata or {}))


def save_domain(path: str | Path, domain: Domain) -> None:
    """Write `domain` to `path` atomically (loadable with torch.load(weights_only=True))."""
    payload = {
        "format": DOMAIN_FORMAT,
        "version": DOMAIN_VERSION,
        "mode": domain.mode,
        "base": domain.base.to_dict(),
        "offsets": {key: value.detach().cpu().contiguous() for key, value in domain.tensors.items()},
        # a JSON round trip keeps the file free of custom classes
        "metadata": json.loads(json.dumps(domain.metadata)),
    }
    run_files.atomic_write(Path(path), lambda tmp: torch.save(payload, tmp))


def load_domain(path: str | Path) -> Domain:
    """Read a domain.pt; UserError naming the file when it is missing or not a domain file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{path}: domain file not found")
    try:
        payload = load_weights(path)
    except (OSError, WeightsFileError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else exc
        raise UserError(f"{path}: not a readable domain file ({reason})") from None
    if not isinstance(payload, Mapping) or payload.get("format") != DOMAIN_FORMAT:
        raise UserError(f"{path}: not a nada-sweep domain file (a generator.pt goes to --generator, "
                        "a domain.pt to --domain)")
    if payload.get("version") != DOMAIN_VERSION:
        raise UserError(f"{path}: domain file version {payload.get('version')!r}; this version reads "
                        f"{DOMAIN_VERSION}")
    mode = payload.get("mode")
    if mode not in PARAMETRIZATIONS or mode == Full.name:
        light = [name for name in PARAMETRIZATIONS if name != Full.name]
        raise UserError(f"{path}: mode {mode!r} is not a light parametrization ({', '.join(light)})")
    base, offsets = payload.get("base"), payload.get("offsets")
    if not isinstance(base, Mapping) or not {"path", "sha256"} <= set(base) or not isinstance(offsets, Mapping):
        raise UserError(f"{path}: domain file without its base generator's identity or its offsets")
    return Domain(mode, dict(offsets), BaseIdentity(str(base["path"]), str(base["sha256"])),
                  dict(payload.get("metadata") or {}))


def resolve_base(domain: Domain, base: str | Path | None, source: str) -> str:
    """The base generator to load for `domain` (from `source`): `base`, else the recorded path.

    UserError when the recorded base is gone and none is given, or when the base's hash differs.
    """
    if base is None:
        recorded = domain.base.path
        if not recorded.startswith(BUILTIN_PREFIX) and not Path(recorded).is_file():
            raise UserError(f"{source}: its base generator {recorded!r} is not there; give the base with --base")
        base = recorded
    identity = base_identity(base)
    if identity.sha256 != domain.base.sha256:
        raise UserError(f"{source}: trained on a different base generator: {base} has SHA-256 "
                        f"{identity.sha256[:16]}..., the domain was trained on {domain.base.path} "
                        f"({domain.base.sha256[:16]}...)")
    return str(base)


def apply_domain(domain: Domain, generator: Generator, source: str = "domain") -> Parametrization:
    """A parametrization over `generator` (already checked with resolve_base) that renders `domain`."""
    params = build_params(domain.mode, generator)
    params.load_domain_tensors(domain.tensors, source)
    params.requires_grad_(False)
    return params


def scale_domain(domain: Domain, t: float) -> Domain:
    """`domain` with its offsets times t (t = 0: the source, t = 1: the domain); t must be in [0, 1]."""
    if not (math.isfinite(t) and 0 <= t <= 1):
        raise UserError(f"scale: {t} must be between 0 (the source) and 1 (the domain)")
    # Every mode is zero at the source, so t * offsets runs from the source to the domain (for domain_mod
    # the factors run from 1 to 1 + d).
    tensors = {key: value * t for key, value in domain.tensors.items()}
    return replace(domain, tensors=tensors, metadata={**domain.metadata, "scale": t})


def mix_domains(domains: Sequence[Domain], weights: Sequence[float], names: Sequence[str] | None = None) -> Domain:
    """Σ weight_i * offsets_i (StyleDomain's mixing) over domains of one base and one kind of offset.

    names: how to call each domain in errors (default: domain 1, domain 2, ...).
    """
    names = list(names) if names is not None else [f"domain {i + 1}" for i in range(len(domains))]
    if not domains:
        raise UserError("mix: no domain given")
    if len(weights) != len(domains):
        raise UserError(f"mix: {len(weights)} weight(s) {list(weights)} for {len(domains)} domain(s); "
                        "give one weight per domain")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise UserError(f"mix: weights must be finite numbers (got {bad})")
    first = domains[0]
    mode = first.mode
    for name, domain in zip(names[1:], domains[1:]):
        if domain.base.sha256 != first.base.sha256:
            raise UserError(f"mix: {name} was trained on {domain.base.path}, {names[0]} on {first.base.path}; "
                            "only domains of one base generator mix")
        if domain.mode != mode:
            if not {domain.mode, mode} <= set(_STYLESPACE_MODES):
                raise UserError(f"mix: {name} is a {domain.mode} domain, {names[0]} a {first.mode} one; "
                                "only offsets of one kind mix")
            mode = "stylespace"  # a sum of sparse and dense StyleSpace offsets is dense
        if set(domain.tensors) != set(first.tensors):
            raise UserError(f"mix: {name} and {names[0]} hold offsets of different layers")
    tensors = {key: sum(w * d.tensors[key] for w, d in zip(weights, domains)) for key in first.tensors}
    metadata = {"mix": [{"domain": name, "weight": w, **d.metadata} for name, w, d in zip(names, weights, domains)]}
    return Domain(mode, tensors, first.base, metadata)
