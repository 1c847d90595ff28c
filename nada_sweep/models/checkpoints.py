"""Load and save StyleGAN2 generator files (rosinality layout), inferring the architecture from the weights.

Users bring rosinality / StyleGAN-NADA checkpoints ({"g_ema": state_dict, ...}) or NVIDIA StyleGAN2-ADA
network pickles (.pkl, mapped onto the rosinality layout by models/nvidia_pkl.py); nobody should have to
know the channel multiplier or mapping depth a file was trained with, so every size is read off the key
names and tensor shapes (as openai/CLIP's build_model does). Files are read with
torch.load(weights_only=True) or, for .pkl, a restricted unpickler: a checkpoint is data, and opening one
must never run code.
"""

from __future__ import annotations

import argparse
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from nada_sweep.errors import UserError
from nada_sweep.models.cache import ModelCache, file_identity
from nada_sweep.models.nvidia_pkl import read_generator_pkl
from nada_sweep.models.stylegan2 import Generator, channel_table
from nada_sweep.models.weights_file import WeightsFileError, load_weights
from nada_sweep.run_files import atomic_write, output_file_problem

BUILTIN_PREFIX = "builtin:"
NVIDIA_SUFFIX = ".pkl"  # NVIDIA network pickles; everything else is read with torch.load
# Key names every rosinality generator state dict has; quoted in errors so users can recognise the layout.
_EXAMPLE_KEYS = ("style.1.weight", "input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "convs.0.conv.weight")
_CACHE_ENTRIES = 2  # state dicts kept per process; a 1024 px g_ema is ~120 MB


@dataclass
class GeneratorSpec:
    """Everything needed to rebuild a Generator whose state dict then loads with strict=True."""

    size: int  # output resolution in pixels
    style_dim: int  # width of z and w
    n_mlp: int  # mapping-network depth
    channels: dict[int, int]  # resolution -> feature channels, 4..size

    def to_dict(self) -> dict[str, Any]:
        # JSON object keys are strings, so the channel table is stored with string resolutions
        return {
            "size": self.size,
            "style_dim": self.style_dim,
            "n_mlp": self.n_mlp,
            "channels": {str(res): ch for res, ch in sorted(self.channels.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "generator spec") -> GeneratorSpec:
        try:
            spec = cls(
                size=int(data["size"]),
                style_dim=int(data["style_dim"]),
                n_mlp=int(data["n_mlp"]),
                channels={int(res): int(ch) for res, ch in dict(data["channels"]).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{source}: invalid generator spec {dict(data)!r} ({exc}); expected keys "
                "size, style_dim, n_mlp, channels {resolution: channels}"
            ) from None
        spec.validate(source)
        return spec

    def validate(self, source: str = "generator spec") -> None:
        """Raise UserError when a Generator cannot be built from this spec."""
        if self.style_dim < 1 or self.n_mlp < 0:
            raise UserError(f"{source}: style_dim={self.style_dim}, n_mlp={self.n_mlp}: need >= 1 and >= 0")
        try:
            channel_table(self.size, channels=self.channels)
        except ValueError as exc:
            raise UserError(f"{source}: {exc}") from None


TINY_SPEC = GeneratorSpec(size=64, style_dim=64, n_mlp=2, channels={4: 32, 8: 32, 16: 32, 32: 32, 64: 32})
_BUILTINS = {"tiny": (TINY_SPEC, 0)}  # name -> (spec, seed)


@dataclass
class LoadedGenerator:
    generator: Generator
    spec: GeneratorSpec
    latent_avg: Tensor | None  # mean w stored in the file (truncation centre), if any
    metadata: dict[str, Any] = field(default_factory=dict)  # ours, e.g. {"random_weights": True}
    source: str = ""  # "builtin:<name>" or the resolved file path


def infer_spec(state_dict: Mapping[str, Any], source: str = "state dict") -> GeneratorSpec:
    """Read size, style_dim, n_mlp and the channel table off a rosinality generator state dict."""

    def shape(key: str) -> tuple[int, ...] | None:
        value = state_dict.get(key)
        return tuple(value.shape) if isinstance(value, Tensor) else None

    required = ("input.input", "conv1.conv.weight", "conv1.conv.modulation.weight", "to_rgb1.conv.weight")
    missing = [key for key in required if shape(key) is None]
    if missing:
        found = list(state_dict)[:8]
        raise UserError(
            f"{source}: not a StyleGAN2 generator (rosinality layout): missing {missing}; expected a "
            f"dict with 'g_ema' or 'g', or a generator state dict with keys such as "
            f"{', '.join(repr(k) for k in _EXAMPLE_KEYS)}; found keys {found}"
            + (" ..." if len(state_dict) > 8 else "")
        )

    style_dim = shape("conv1.conv.modulation.weight")[1]
    n_mlp = 0
    while shape(f"style.{n_mlp + 1}.weight") is not None:
        n_mlp += 1

    channels = {4: shape("input.input")[1]}
    n_blocks = 0
    while shape(f"to_rgbs.{n_blocks}.conv.weight") is not None:
        for conv_index in (2 * n_blocks, 2 * n_blocks + 1):
            if shape(f"convs.{conv_index}.conv.weight") is None:
                raise UserError(
                    f"{source}: generator state dict has 'to_rgbs.{n_blocks}.conv.weight' but no "
                    f"'convs.{conv_index}.conv.weight'; the file is incomplete or not rosinality's layout"
                )
        # ModulatedConv2d weight: [1, out_channels, in_channels, k, k]
        channels[2 ** (n_blocks + 3)] = shape(f"convs.{2 * n_blocks}.conv.weight")[1]
        n_blocks += 1

    spec = GeneratorSpec(size=2 ** (n_blocks + 2), style_dim=style_dim, n_mlp=n_mlp, channels=channels)
    spec.validate(source)
    return spec


def build_generator(spec: GeneratorSpec) -> Generator:
    """A randomly initialised Generator with the architecture in `spec`."""
    return Generator(spec.size, spec.style_dim, spec.n_mlp, channels=spec.channels)


def is_random_weight(loaded: LoadedGenerator) -> bool:
    """True when the weights are untrained (builtin test models, or files adapted from them)."""
    return bool(loaded.metadata.get("random_weights", False))


# --------------------------------------------------------------------------------------------------------
# Loading


@dataclass
class _Checkpoint:
    spec: GeneratorSpec
    state_dict: dict[str, Tensor]  # CPU tensors; copied into every Generator, never handed out
    latent_avg: Tensor | None
    metadata: dict[str, Any]


_checkpoints: ModelCache[_Checkpoint] = ModelCache(_CACHE_ENTRIES)


def load_generator(path_or_name: str | Path, device: str | torch.device = "cpu") -> LoadedGenerator:
    """Load "builtin:<name>" or a checkpoint file into a fresh Generator on `device`.

    Files may hold {"g_ema": ...} (preferred), {"g": ...} or a bare generator state dict; a .pkl is an NVIDIA
    StyleGAN2-ADA network pickle whose G_ema is converted (a .pkl that is a torch.save archive reads as one).
    The state dict of a file is cached per process by (path, mtime, size), so repeated loads read it once.
    """
    name = str(path_or_name)
    if name.startswith(BUILTIN_PREFIX):
        return _load_builtin(name, device)

    path = Path(name).expanduser()
    source = str(path)
    checkpoint = _read_cached(path)
    spec = checkpoint.spec
    latent_avg = None if checkpoint.latent_avg is None else checkpoint.latent_avg.to(device, copy=True)
    return LoadedGenerator(
        generator=_instantiate(spec, checkpoint.state_dict, device, source),
        spec=spec,
        latent_avg=latent_avg,
        metadata=dict(checkpoint.metadata),
        source=str(path.resolve()),
    )


def _load_builtin(name: str, device: str | torch.device) -> LoadedGenerator:
    key = name[len(BUILTIN_PREFIX):]
    if key not in _BUILTINS:
        choices = ", ".join(BUILTIN_PREFIX + k for k in _BUILTINS)
        raise UserError(f"generator: unknown builtin {name!r}; available: {choices}")
    spec, seed = _BUILTINS[key]
    # seeded without disturbing the caller's global RNG stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator(spec)
    return LoadedGenerator(
        generator=generator.to(device),
        spec=spec,
        latent_avg=None,
        metadata={"random_weights": True, "builtin": key},
        source=name,
    )


def _instantiate(
    spec: GeneratorSpec, state_dict: Mapping[str, Tensor], device: str | torch.device, source: str
) -> Generator:
    # built in place on the target device (random init there is cheap; building on "meta" instead
    # costs a multi-second one-off import of torch's meta kernels per process)
    with torch.device(device):
        generator = build_generator(spec)
    try:
        generator.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise UserError(
            f"{source}: weights do not match the StyleGAN2 architecture inferred from them "
            f"(size {spec.size}, style_dim {spec.style_dim}, n_mlp {spec.n_mlp}): "
            + " ".join(line.strip() for line in detail[1:6])
        ) from None
    return generator


def _read_cached(path: Path) -> _Checkpoint:
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise UserError(f"{path}: generator file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read generator file ({exc.strerror or exc})") from None
    if resolved.is_dir():
        raise UserError(f"{path}: is a directory; expected a generator checkpoint file (.pt or .pkl)")

    return _checkpoints.get(file_identity(resolved), lambda: _read_checkpoint(path, resolved))


def _read_checkpoint(path: Path, resolved: Path) -> _Checkpoint:
    if resolved.stat().st_size == 0:
        raise UserError(f"{path}: file is empty; expected a generator checkpoint (.pt or .pkl)")
    if resolved.suffix.lower() == NVIDIA_SUFFIX and not zipfile.is_zipfile(resolved):
        converted = read_generator_pkl(path)
        state_dict = converted.state_dict
        return _Checkpoint(spec=infer_spec(state_dict, f"{path} [G_ema]"), state_dict=state_dict,
                           latent_avg=converted.latent_avg, metadata={})
    try:
        # rosinality's train.py stores its argparse.Namespace under "args"; it is plain data
        obj = load_weights(resolved, [argparse.Namespace])
    except OSError as exc:
        raise UserError(f"{path}: cannot read generator file ({exc.strerror or exc})") from None
    except WeightsFileError as exc:
        advice = ("; re-save the generator weights as a plain state dict ({'g_ema': generator.state_dict()}) from "
                  "a source you trust") if exc.needs_code else ""
        raise UserError(f"{path}: {exc}{advice}") from None

    state_dict: Any = obj
    where = str(path)
    if isinstance(obj, Mapping):
        for entry in ("g_ema", "g"):
            if entry in obj:
                state_dict = obj[entry]
                where = f"{path} [{entry!r}]"
                break
    if not isinstance(state_dict, Mapping):
        raise UserError(
            f"{path}: not a StyleGAN2 generator checkpoint: expected a dict with 'g_ema' or 'g', or a "
            f"generator state dict, found {type(state_dict).__name__}"
        )
    spec = infer_spec(state_dict, where)

    latent_avg = obj.get("latent_avg") if isinstance(obj, Mapping) else None
    ours = obj.get("nada_sweep") if isinstance(obj, Mapping) else None
    metadata = {k: v for k, v in ours.items() if k != "spec"} if isinstance(ours, Mapping) else {}
    return _Checkpoint(
        spec=spec,
        state_dict={k: v for k, v in state_dict.items() if isinstance(v, Tensor)},
        latent_avg=latent_avg if isinstance(latent_avg, Tensor) else None,
        metadata=metadata,
    )


# --------------------------------------------------------------------------------------------------------
# Saving


def save_generator(
    path: str | Path,
    generator: Generator,
    latent_avg: Tensor | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Write {"g_ema", "latent_avg", "nada_sweep": metadata + spec} atomically (run_files.atomic_write).

    The "g_ema" entry is a plain CPU state dict, so rosinality, StyleGAN-NADA and similar tools load it.
    """
    path = Path(path)
    state_dict = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    spec = infer_spec(state_dict, f"{path} (generator being saved)")
    # a JSON round trip keeps the file loadable with weights_only=True (no custom classes sneak in)
    ours = json.loads(json.dumps(dict(metadata or {})))
    ours["spec"] = spec.to_dict()
    payload = {
        "g_ema": state_dict,
        "latent_avg": None if latent_avg is None else latent_avg.detach().cpu(),
        "nada_sweep": ours,
    }
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


# --------------------------------------------------------------------------------------------------------
# Converting


def convert_generator(source: str | Path, out: str | Path, overwrite: bool = False) -> tuple[GeneratorSpec, bool]:
    """Load any generator file (an NVIDIA .pkl above all) and save it as a rosinality file at `out`.

    Returns the architecture and whether a latent_avg was written. Refuses before reading anything when `out`
    is the source, exists (unless `overwrite`), or ends in .pkl (which would be read back as an NVIDIA pickle).
    """
    source_path, out_path = Path(source).expanduser(), Path(out).expanduser()
    if out_path.suffix.lower() == NVIDIA_SUFFIX:
        raise UserError(f"{out}: the output is a rosinality (torch.save) file; name it .pt, not .pkl")
    if out_path.exists() and source_path.exists() and out_path.resolve() == source_path.resolve():
        raise UserError(f"{out}: is the source file itself; choose another output")
    if out_path.is_dir():
        raise UserError(f"{out}: is a directory; give the path of the .pt file to write")
    if out_path.exists() and not overwrite:
        raise UserError(f"{out}: already exists; pass --overwrite to replace it")
    problem = output_file_problem(out_path)
    if problem:
        raise UserError(f"out: {problem}")
    loaded = load_generator(source_path)
    save_generator(out_path, loaded.generator, loaded.latent_avg,
                   {**loaded.metadata, "converted_from": source_path.name})
    return loaded.spec, loaded.latent_avg is not None
