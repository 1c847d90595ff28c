"""`nada-sweep generate`: render a grid from any rosinality-format generator file, or from domain files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from nada_sweep.adapt.domains import apply_domain, load_domain, mix_domains, resolve_base
from rich.console import Console

from nada_sweep.adapt.mapper import load_mapper, mapped_latents
from nada_sweep.adapt.settings import MAX_SEED
from nada_sweep.devices import resolve_device
from nada_sweep.errors import UserError
from nada_sweep.images import save_grid
from nada_sweep.media.latents import check_generator, load_latents, render_codes
from nada_sweep.models.checkpoints import LoadedGenerator, is_random_weight, load_generator
from nada_sweep.run_files import MAPPER, RANDOM_WEIGHT_LABEL, output_file_problem
from nada_sweep.sampling import fixed_latents, render

# Images in one grid: 16 x 16, a 16k-pixel-wide PNG at 1024 px. More (--n 1000000000) would fail on memory
# after minutes of rendering; several grids with other --seed values show as many samples.
MAX_GRID_IMAGES = 256


def generate_command(generator: str | None, out: str, *, n: int, seed: int, truncation: float, device: str,
                     use_mapper: bool, latents: str | None, domains: Sequence[str], mix: str | None,
                     base: str | None, console: Console) -> int:
    """`nada-sweep generate`: every option checked (UserError naming it) before any model is loaded."""
    if not 1 <= n <= MAX_GRID_IMAGES:
        raise UserError(f"--n: {n} must be in 1..{MAX_GRID_IMAGES} (the images of one grid); render more grids "
                        "with other --seed values")
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed: {seed} must be in 0..{MAX_SEED}")
    if not 0 < truncation <= 1:
        raise UserError(f"--truncation: {truncation} must be in (0, 1]")
    if (generator is None) == (not domains):
        raise UserError("generate: give either a generator file or --domain (a domain.pt)")
    if not domains and (mix is not None or base is not None):
        raise UserError("--mix and --base apply to domain files: give them with --domain")
    problem = output_file_problem(Path(out), (".png",))
    if problem:
        raise UserError(f"--out: {problem}")
    resolve_device(device, "--device")
    path, mapped = generate_grid(generator, Path(out), n=n, seed=seed, truncation=truncation, device=device,
                                 use_mapper=use_mapper, latents=Path(latents) if latents else None,
                                 domains=domains, mix=_parse_mix(mix), base=base)
    console.print(f"wrote {path}" + (" (latent mapper applied)" if mapped else ""))
    return 0


def _parse_mix(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--mix: {text!r} must be comma-separated numbers, one weight per --domain "
                        "(e.g. 0.5,0.5)") from None


def load_domains(paths: Sequence[str | Path], mix: Sequence[float] | None, base: str | None,
                 device: torch.device) -> LoadedGenerator:
    """The base generator with `paths`' domains (mixed with weights `mix`) folded in, as a plain generator.

    One domain without `mix` is applied as it is; several need one weight each (StyleDomain's mixing:
    Σ weight_i * offsets_i). Every domain must have been trained on `base` (default: the base the first
    domain records); UserError otherwise.
    """
    names = [str(path) for path in paths]
    domains = [load_domain(path) for path in paths]
    if mix is None and len(domains) > 1:
        raise UserError(f"--mix: {len(domains)} domains given; say how to mix them, one weight each "
                        f"(e.g. --mix {','.join(['0.5'] * len(domains))})")
    domain = domains[0] if mix is None else mix_domains(domains, mix, names)
    base_path = resolve_base(domain, base, names[0])  # mix_domains checked that the domains share one base
    loaded = load_generator(base_path, device)
    folded = apply_domain(domain, loaded.generator, names[0] if len(names) == 1 else "mix").fold()
    return LoadedGenerator(folded, loaded.spec, loaded.latent_avg, loaded.metadata, loaded.source)


def generate_grid(
    generator: str | None,
    out: Path,
    *,
    n: int = 16,
    seed: int = 0,
    truncation: float = 1.0,
    device: str = "auto",
    use_mapper: bool = True,
    latents: Path | None = None,
    domains: Sequence[str] = (),
    mix: Sequence[float] | None = None,
    base: str | None = None,
) -> tuple[Path, bool]:
    """Render `n` seeded samples of `generator` (or of `domains` on `base`) into one PNG grid at `out`.

    A latent mapper saved beside the generator file (mapper.pt) is applied unless `use_mapper` is False;
    with one unmixed domain, the mapper beside its domain.pt (the same trial's) is.
    With `latents` (a file from `nada-sweep invert`) its photo codes are rendered instead of seeded samples.
    Returns the grid's path and whether a mapper was applied.
    """
    torch_device = resolve_device(device)
    codes = load_latents(latents) if latents is not None else None
    if codes is not None and len(codes.latents) > MAX_GRID_IMAGES:
        raise UserError(f"--latents: {latents} holds {len(codes.latents)} codes; one grid shows at most "
                        f"{MAX_GRID_IMAGES}")
    if domains:
        loaded = load_domains(domains, mix, base, torch_device)
        beside = Path(domains[0]) if len(domains) == 1 and mix is None else None
    else:
        assert generator is not None
        loaded = load_generator(generator, torch_device)
        beside = Path(generator)
    g = loaded.generator.eval()
    if codes is not None:
        check_generator(codes, g, generator or str(domains[0]))
    mapper_path = beside.with_name(MAPPER) if beside is not None else None
    use = use_mapper and mapper_path is not None and mapper_path.is_file()
    mapper = load_mapper(mapper_path, torch_device) if use and mapper_path is not None else None
    if codes is not None:
        w_plus = codes.latents.to(torch_device)
        if mapper:
            with torch.no_grad():
                w_plus = mapper(w_plus)
        images = render_codes(g, w_plus, codes.noise)
        n = len(w_plus)
    else:
        w = fixed_latents(g, n, seed, truncation, loaded.latent_avg)
        images = render(g, mapped_latents(mapper, g, w) if mapper else w)
    label = RANDOM_WEIGHT_LABEL if is_random_weight(loaded) else None
    save_grid(images, out, label, nrow=math.ceil(math.sqrt(n)))
    return out, mapper is not None
