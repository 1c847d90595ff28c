"""Our CLIP losses against the official StyleGAN-NADA code on identical inputs, and its layer search's movement.

    python benchmarks/prepare_official.py /tmp/StyleGAN-nada     # once
    python benchmarks/official_parity.py /tmp/StyleGAN-nada [--size 1024] [--batch 2] [--seeds 3]

Both sides get the same CLIP weights (a seeded tiny CLIP: 32 px ViT, whose exp(logit_scale) is 1/0.07, not
100), the same source and adapted images (smooth random [-1, 1] images), the same prompts and, for the patch
loss, the same crops (the official crop centres are set to ours) and the reference's own part prompts, read
from the checkout at run time (prepare_official.official_part_prompts). Per loss: both values and their
relative difference, plus what our previous forms gave (1 - cos; the patch loss without the part weighting).
Then the official layer search (k of a 32 px generator's W+ indices, one SGD step) on the prepared checkout:
how far its W+ codes moved (0 on a CPU without prepare_official's `.clone()`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import make_clip_files, make_generator_file, print_table
from prepare_official import load_official, official_part_prompts

from nada_sweep.adapt.losses import ClipGuidance, directional_loss, global_loss, text_direction
from nada_sweep.models.clip_models import load_clip

SOURCE, TARGET = "photo", "pencil sketch"
OFFICIAL_PATCH = 510  # the reference's crop side (fixed in its code)


def smooth_images(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source images and adapted ones that differ from them by a smaller smooth change, in [-1, 1]."""
    rng = torch.Generator().manual_seed(seed)

    def smooth(scale: float) -> torch.Tensor:
        coarse = (torch.rand(n, 3, 8, 8, generator=rng) * 2 - 1) * scale
        return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)

    src = smooth(1.0).clamp(-1, 1)
    return src, (src + smooth(0.4)).clamp(-1, 1)


def ours(clip, src: torch.Tensor, dst: torch.Tensor, seed: int, prompts: list[str], **lambdas: float) -> float:
    guidance = ClipGuidance([(clip, 1.0)], source=SOURCE, target=TARGET, **({"lambda_direction": 0.0} | lambdas),
                            n_patches=1, patch_size=OFFICIAL_PATCH, seed=seed, part_prompts=prompts)
    return guidance.loss(dst, guidance.embed_source(src), img_src=src).item()


def crop_places(n: int, size: int, seed: int) -> tuple[list[int], list[int]]:
    """The crops ClipGuidance(seed=seed) cuts first: its generator's first draws (tops, then lefts)."""
    rng = torch.Generator().manual_seed(seed)
    tops = torch.randint(0, size - OFFICIAL_PATCH + 1, (n, 1), generator=rng)[:, 0].tolist()
    lefts = torch.randint(0, size - OFFICIAL_PATCH + 1, (n, 1), generator=rng)[:, 0].tolist()
    return tops, lefts


def unweighted_patch(clip, src: torch.Tensor, dst: torch.Tensor, seed: int) -> float:
    """Our previous patch loss on the same crops: the directional loss against the target direction."""
    tops, lefts = crop_places(src.shape[0], src.shape[-1], seed)

    def crops(images: torch.Tensor) -> torch.Tensor:
        return torch.stack([images[i, :, t:t + OFFICIAL_PATCH, l:l + OFFICIAL_PATCH]
                            for i, (t, l) in enumerate(zip(tops, lefts))])

    with torch.no_grad():
        return directional_loss(clip.encode_images(crops(src)), clip.encode_images(crops(dst)),
                                text_direction(clip, SOURCE, TARGET)).item()


def compare_losses(root: Path, clip_file: Path, size: int, batch: int, seeds: int) -> list[dict]:
    from ZSSGAN.criteria.clip_loss import CLIPLoss

    clip = load_clip(str(clip_file), "cpu")
    prompts = official_part_prompts(root)
    official = CLIPLoss("cpu", clip_model="ViT-B/32")
    half = OFFICIAL_PATCH // 2
    rows = []
    for seed in range(seeds):
        src, dst = smooth_images(batch, size, seed)
        tops, lefts = crop_places(batch, size, seed)
        # its centres are (x, y) pairs; one crop per image
        official.random_patch_centers = lambda shape, num, patch: [[l + half, t + half] for t, l in zip(tops, lefts)]
        with torch.no_grad():
            theirs = {
                "directional": official.clip_directional_loss(src, SOURCE, dst, TARGET).item(),
                "global": official.global_clip_loss(dst, [f"a {TARGET}"]).item(),
                "manifold": official.clip_angle_loss(src, SOURCE, dst, TARGET).item(),
                "patch": official.patch_directional_loss(src, SOURCE, dst, TARGET).item(),
            }
            text = clip.encode_texts([f"a {TARGET}"])[0]
            before = {"global": global_loss(clip.encode_images(dst), text, math.log(100)).item(),
                      "patch": unweighted_patch(clip, src, dst, seed)}
        got = {
            "directional": ours(clip, src, dst, seed, prompts, lambda_direction=1.0),
            "global": ours(clip, src, dst, seed, prompts, lambda_global=1.0),
            "manifold": ours(clip, src, dst, seed, prompts, lambda_manifold=1.0),
            "patch": ours(clip, src, dst, seed, prompts, lambda_patch=1.0),
        }
        for name, value in theirs.items():
            row = {"seed": seed, "loss": name, "official": value, "ours": got[name],
                   "relative_difference": abs(got[name] - value) / abs(value)}
            if name in before:
                row["previous_form"] = before[name]
                row["previous/official"] = before[name] / value
            rows.append(row)
    return rows


def official_layer_movement(clip_file: Path, gen: Path, k: int) -> dict:
    """The official W+ search once: its per-index movement (what torch.topk ranks) and the chosen layers."""
    from ZSSGAN.model.ZSSGAN import ZSSGAN

    args = types.SimpleNamespace(
        sg3=False, sgxl=False, frozen_gen_ckpt=str(gen), train_gen_ckpt=str(gen), size=32, phase=None,
        lambda_direction=1.0, lambda_patch=0.0, lambda_global=0.0, lambda_manifold=0.0, lambda_texture=0.0,
        clip_models=["ViT-B/32"], clip_model_weights=[1.0], source_class=SOURCE, target_class=TARGET,
        auto_layer_k=k, auto_layer_iters=1, auto_layer_batch=8, target_img_list=None, mixing=0.0, batch=2,
        lr=0.002, g_reg_every=4,
    )
    net = ZSSGAN(args)
    net.generator_trainable.unfreeze_layers()
    seen: dict = {}
    topk = torch.topk

    def recording_topk(values, count, *rest, **kw):
        seen["movement"] = values.detach().clone()
        return topk(values, count, *rest, **kw)

    torch.topk = recording_topk
    try:
        torch.manual_seed(0)
        net.determine_opt_layers()
    finally:
        torch.topk = topk
    movement = seen["movement"]
    return {"k": k, "max_movement": movement.max().item(), "indices_moved": int((movement > 0).sum()),
            "n_latent": movement.numel(), "chosen": topk(movement, k)[1].tolist()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("official", type=Path, help="a checkout prepared by prepare_official.py")
    parser.add_argument("--size", type=int, default=1024, help="image side (the official crop is 510 px)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="image sets (and crop places) compared")
    parser.add_argument("--k", type=int, default=3, help="layers the official search picks")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.size <= OFFICIAL_PATCH:
        parser.error(f"--size must exceed the official crop side, {OFFICIAL_PATCH}")
    torch.set_num_threads(1)
    root = args.official.resolve()
    work = Path(tempfile.mkdtemp(prefix="nada-parity-"))
    clip_file = make_clip_files(work, 1)[0]
    load_official(root, {"ViT-B/32": clip_file})

    rows = compare_losses(root, clip_file, args.size, args.batch, args.seeds)
    print_table(f"losses, ours vs official ({args.size} px, batch {args.batch}, tiny CLIP, reference part prompts)",
                ["seed", "loss", "official", "ours", "rel. difference", "previous form", "previous / official"],
                [[r["seed"], r["loss"], f"{r['official']:.6g}", f"{r['ours']:.6g}", f"{r['relative_difference']:.1e}",
                  f"{r['previous_form']:.6g}" if "previous_form" in r else "-",
                  f"{r['previous/official']:.2f}" if "previous_form" in r else "-"] for r in rows])
    search = official_layer_movement(clip_file, make_generator_file(work), args.k)
    print(f"\nofficial layer search: {search['indices_moved']} of {search['n_latent']} W+ indices moved "
          f"(largest mean |w - w0| {search['max_movement']:.3g}); chose {search['chosen']}")
    results = {"losses": rows, "layer_search": search}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
