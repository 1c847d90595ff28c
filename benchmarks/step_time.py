"""Training-step time: optimised vs faithful (vs the official StyleGAN-NADA code), measured side by side.

    python benchmarks/step_time.py [--reps 8] [--official /tmp/StyleGAN-nada] [--profile optimised:readme]

Config: a 32 px StyleGAN2 at 512 channels (style_dim 512, 8 mapping layers: the width of the real models at
a size a CPU can step through), tiny seeded CLIP models (32 px ViT). Recipes:
- readme: k = n_latent (8), auto_layer_iters 1, batch 2, two CLIP models (the README command, scaled down);
- shape: k = 5 (2/3 of n_latent), auto_layer_iters 1, batch 2, two CLIP models (selection that matters);
- plain: k = 0 (no selection), batch 2, one CLIP model.
Variants: optimised (our default: shared frozen bank, selection without weight gradients and skipped when
k = n_latent, fast kernels), faithful (`faithful: true`: frozen side every step, weight gradients during
selection), official (the reference's ZSSGAN.forward + backward + Adam step; see prepare_official.py).
The variants take turns step by step, so drifting machine load hits them alike; ratios are medians of
per-round ratios. The optimised variant reads its frozen side from a bank built beforehand: building one
entry costs about one "frozen side" (printed), paid once per sweep for all trials that share the bank.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    interleaved,
    make_clip_files,
    make_generator_file,
    median,
    print_table,
    ratio,
)
from prepare_official import load_official

from nada_sweep.adapt.bank import BankedFrozenSide, compute_entry
from nada_sweep.adapt.settings import AdaptConfig, ClipSpec
from nada_sweep.adapt.nada import Adaptation, LiveFrozenSide, load_guidance
from nada_sweep.models.checkpoints import load_generator

RECIPES = {
    "readme": {"k": 8, "auto_layer_iters": 1, "clip_models": 2},
    "shape": {"k": 5, "auto_layer_iters": 1, "clip_models": 2},
    "plain": {"k": 0, "auto_layer_iters": 0, "clip_models": 1},
}
SOURCE, TARGET = "photo", "pencil sketch"


def our_step(gen: Path, clips: list[Path], recipe: dict, faithful: bool, bank_entries: int):
    config = AdaptConfig(
        generator=str(gen), clip=[ClipSpec(name=str(p)) for p in clips[: recipe["clip_models"]]],
        source=SOURCE, target=TARGET, k=recipe["k"], auto_layer_iters=recipe["auto_layer_iters"], batch=2,
        faithful=faithful, device="cpu",
    )
    device = torch.device("cpu")
    adaptation = Adaptation(config, load_generator(config.generator, device), load_guidance(config, device), device)
    if faithful:
        frozen = LiveFrozenSide(adaptation)
    else:
        frozen = BankedFrozenSide(adaptation, entries=[compute_entry(adaptation, i) for i in range(bank_entries)])
    counter = iter(range(10**9))
    return lambda: adaptation.step(next(counter), frozen), adaptation


def frozen_side_cost(adaptation: Adaptation) -> callable:
    counter = iter(range(10**9))
    return lambda: compute_entry(adaptation, next(counter))


def official_step(root: Path, gen: Path, clips: list[Path], recipe: dict):
    """The reference's train-loop body on its own ZSSGAN, CLIP loads answered with our tiny CLIP files."""
    names = ["ViT-B/32", "ViT-B/16"][: recipe["clip_models"]]
    load_official(root, dict(zip(names, clips)))
    from ZSSGAN.model.ZSSGAN import ZSSGAN
    from ZSSGAN.utils.training_utils import mixing_noise

    args = types.SimpleNamespace(
        sg3=False, sgxl=False, frozen_gen_ckpt=str(gen), train_gen_ckpt=str(gen), size=32, phase=None,
        lambda_direction=1.0, lambda_patch=0.0, lambda_global=0.0, lambda_manifold=0.0, lambda_texture=0.0,
        clip_models=names, clip_model_weights=[1.0] * len(names), source_class=SOURCE, target_class=TARGET,
        auto_layer_k=recipe["k"], auto_layer_iters=recipe["auto_layer_iters"], auto_layer_batch=8,
        target_img_list=None, mixing=0.0, batch=2, lr=0.002, g_reg_every=4,
    )
    net = ZSSGAN(args)
    ratio_ = args.g_reg_every / (args.g_reg_every + 1)
    optim = torch.optim.Adam(net.generator_trainable.parameters(), lr=args.lr * ratio_,
                             betas=(0**ratio_, 0.99**ratio_))

    def step() -> None:  # train.py's loop body
        net.train()
        sample_z = mixing_noise(args.batch, 512, args.mixing, "cpu")
        [_, _], loss = net(sample_z)
        net.zero_grad()
        loss.backward()
        optim.step()

    return step


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=6, help="timed steps per variant and recipe")
    parser.add_argument("--recipes", default="readme,shape,plain")
    parser.add_argument("--official", type=Path, help="a checkout prepared by prepare_official.py")
    # One thread: on a shared machine, two OpenMP threads stall at every barrier while a neighbour holds a
    # core (steps measured 20x slower), which would time the neighbour rather than the code.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", help="VARIANT:RECIPE: print a torch.profiler table of that variant instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    work = Path(tempfile.mkdtemp(prefix="nada-bench-"))
    gen = make_generator_file(work)
    clips = make_clip_files(work, 2)

    results: dict = {}
    rows = []
    for name in args.recipes.split(","):
        recipe = RECIPES[name]
        optimised, adaptation = our_step(gen, clips, recipe, False, bank_entries=args.reps + 2)
        variants = {"optimised": optimised, "faithful": our_step(gen, clips, recipe, True, 0)[0]}
        if args.official:
            variants["official"] = official_step(args.official.resolve(), gen, clips, recipe)
        if args.profile:
            wanted_variant, wanted_recipe = args.profile.split(":")
            if wanted_recipe == name:
                _profile(variants[wanted_variant])
            continue
        times = interleaved(variants, args.reps)
        frozen = interleaved({"frozen": frozen_side_cost(adaptation)}, 3)["frozen"]
        entry = {f"{v}_s": median(t) for v, t in times.items()}
        entry["optimised/faithful"] = ratio(times, "optimised", "faithful")
        if "official" in times:
            entry["optimised/official"] = ratio(times, "optimised", "official")
            entry["faithful/official"] = ratio(times, "faithful", "official")
        entry["bank_entry_s"] = median(frozen)
        results[name] = entry
        rows.append([name, entry["optimised_s"], entry["faithful_s"], entry.get("official_s", "-"),
                     entry["optimised/faithful"], entry.get("optimised/official", "-"),
                     entry.get("faithful/official", "-"), entry["bank_entry_s"]])
    if rows:
        print_table(
            f"step time, seconds (median of {args.reps}, {args.threads} threads); ratios: median per-round",
            ["recipe", "optimised", "faithful", "official", "opt/faithful", "opt/official", "faithful/official",
             "bank entry"],
            rows,
        )
    return results


def _profile(step) -> None:
    from torch.profiler import ProfilerActivity, profile

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
