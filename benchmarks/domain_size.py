"""Size on disk of one domain per parametrization, against the generator.pt every trial also leaves.

    python benchmarks/domain_size.py [--sizes 256,1024]

Bases: rosinality StyleGAN2s with random weights and the real channel layout (1024 px: FFHQ config-f,
channel_multiplier 2; 256 px: likewise). Each light mode's numbers are filled with random values (a
sparse domain keeps its 20%), saved with save_domain; `full` is the folded generator saved as generator.pt
({"g_ema", "latent_avg", "nada_sweep"}: what a trial writes).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_generator_file, print_table

from nada_sweep.adapt.domains import base_identity, domain_of, save_domain
from nada_sweep.adapt.params import PARAMETRIZATIONS, SparseStyleSpace, build_params
from nada_sweep.models.checkpoints import load_generator, save_generator


def sizes_at(size: int, work: Path) -> list[list[object]]:
    base_path = make_generator_file(work, size)
    identity = base_identity(base_path)
    generator = load_generator(base_path).generator
    rows = []
    for mode in PARAMETRIZATIONS:
        params = build_params(mode, generator)
        path = work / f"{mode}-{size}.pt"
        if mode == "full":
            save_generator(path, params.fold())
        else:
            with torch.no_grad():
                for tensor in params.trainable():
                    tensor.normal_(0, 0.1)
            if isinstance(params, SparseStyleSpace):
                params.prune_to(params.keep_count)
            save_domain(path, domain_of(params, identity))
        rows.append([mode, params.num_trainable(), path.stat().st_size / 1024])
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,1024")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="nada-domain-size-"))
    for size in (int(s) for s in args.sizes.split(",")):
        print_table(f"{size} px", ["mode", "numbers", "file KiB"], sizes_at(size, work))


if __name__ == "__main__":
    main()
