"""Generator forward+backward throughput, fast kernels vs the straightforward (grouped-conv) ones.

    python benchmarks/kernels.py [--sizes 256,1024] [--threads 1]

Configs: rosinality's StyleGAN2 at 256 px and 1024 px (channel_multiplier 2, style_dim 512, random weights).
One "image" = one forward and backward pass of a training step (weights of the default trainable set
requiring gradients, the loss a plain mean of the image). 1024 px on a CPU is slow: batch 1 and 2 timed
rounds there; 256 px uses batch 2 and 3 rounds. The two modes take turns, round by round.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, median, print_table, ratio

from nada_sweep.adapt.layers import default_trainable, set_trainable
from nada_sweep.models.stylegan2 import Generator

SETTINGS = {256: (2, 3), 1024: (1, 2)}  # size -> (batch, timed rounds)


def fwd_bwd(generator: Generator, fast: bool, batch: int):
    noise = generator.make_noise()
    w = torch.randn(batch, generator.style_dim)

    def run() -> None:
        generator.set_fast_kernels(fast)
        generator.zero_grad(set_to_none=True)
        image = generator([w], input_is_latent=True, noise=noise)[0]
        image.mean().backward()

    return run


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,1024")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results, rows = {}, []
    for size in map(int, args.sizes.split(",")):
        batch, reps = SETTINGS.get(size, (1, 2))
        generator = Generator(size)
        set_trainable(generator, default_trainable(generator))
        times = interleaved({"fast": fwd_bwd(generator, True, batch),
                             "straightforward": fwd_bwd(generator, False, batch)}, reps)
        fast, slow = batch / median(times["fast"]), batch / median(times["straightforward"])
        results[size] = {"fast_img_s": fast, "straightforward_img_s": slow,
                         "speedup": 1 / ratio(times, "fast", "straightforward")}
        rows.append([f"{size} px (batch {batch}, {reps} rounds)", fast, slow, f"{results[size]['speedup']:.2f}x"])
        del generator
    print_table(f"generator forward+backward, images/s ({args.threads} thread(s))",
                ["config", "fast", "straightforward", "fast/straightforward speed"], rows)
    return results


if __name__ == "__main__":
    main()
